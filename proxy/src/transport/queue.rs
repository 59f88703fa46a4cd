//! A lock-free queue that knows its length, for idle connections: pushed
//! and popped by any task without a lock, capped at a maximum, and swept in
//! place.

use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicUsize, Ordering};

/// First in, first out (so the oldest idle connection is reused first).
pub(super) struct Queue<T> {
    items: SegQueue<T>,
    len: AtomicUsize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: SegQueue::new(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<T> Queue<T> {
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Adds `item` unless `max` are already queued.
    pub(super) fn push(&self, item: T, max: usize) {
        if self.len() >= max {
            return;
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        self.items.push(item);
    }

    pub(super) fn pop(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(item)
    }

    /// Keeps only the items `keep` accepts (one pass over what is queued now).
    pub(super) fn retain(&self, keep: impl Fn(&T) -> bool) {
        for _ in 0..self.len() {
            match self.pop() {
                Some(i) if keep(&i) => self.push(i, usize::MAX),
                Some(_) => {}
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_and_capped() {
        let q = Queue::default();
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop(), None);
        for i in 0..5 {
            q.push(i, 3);
        }
        assert_eq!(q.len(), 3, "the surplus is dropped");
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.len(), 2);
        q.push(9, 3);
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(9));
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
        q.push(1, 0);
        assert_eq!(q.len(), 0, "max 0 keeps nothing");
    }

    #[test]
    fn retain_sweeps_once_and_keeps_order() {
        let q = Queue::default();
        for i in 0..6 {
            q.push(i, usize::MAX);
        }
        q.retain(|i| i % 2 == 0);
        assert_eq!(q.len(), 3);
        let left: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(left, [0, 2, 4]);
        q.retain(|_| true);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn shared_between_threads() {
        let q = std::sync::Arc::new(Queue::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        q.push(t * 100 + i, usize::MAX);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.len(), 400);
        let mut all: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert_eq!(q.len(), 0);
    }
}
