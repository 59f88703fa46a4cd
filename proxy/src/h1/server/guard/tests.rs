//! Unit tests of the request-stream guard (a test module).

use super::*;

const MAX: usize = 8192;

/// Feeds `stream` in pieces of `step` bytes; the offset of the cut, if one.
fn cut_at(stream: &[u8], step: usize) -> Option<usize> {
    let mut g = Guard::new(MAX);
    let mut at = 0;
    for piece in stream.chunks(step) {
        match g.scan(piece) {
            Verdict::Pass => at += piece.len(),
            Verdict::Cut(n) => return Some(at + n),
            Verdict::Stop => return Some(at),
        }
    }
    None
}

/// Every piece size gives the same answer as the whole.
fn same_in_pieces(stream: &[u8]) -> Option<usize> {
    let whole = cut_at(stream, stream.len());
    for step in 1..stream.len().min(64) {
        assert_eq!(cut_at(stream, step), whole, "pieces of {step}");
    }
    whole
}

const FINE: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nxyz\r\n0\r\nT: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn well_framed_streams_pass_in_any_pieces() {
    assert_eq!(same_in_pieces(FINE), None);
    let mut g = Guard::new(MAX);
    assert_eq!(g.scan(FINE), Verdict::Pass);
    assert_eq!(g.state, State::Head, "back at a head boundary");
}

#[test]
fn a_repeated_length_or_a_length_beside_chunked_is_cut_at_its_head() {
    for bad in [
        &b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz"[..],
        b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
    ] {
        let stream = [FINE, bad].concat();
        let head_end = FINE.len() + bad.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(same_in_pieces(&stream), Some(head_end), "{bad:?}");
    }
}

#[test]
fn bodies_are_not_read_as_heads() {
    let smuggled = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
    let by_length = [
        format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
        smuggled,
    ]
    .concat();
    assert_eq!(same_in_pieces(&by_length), None);
    let chunked = [
        format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            smuggled.len()
        )
        .as_bytes(),
        smuggled,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    assert_eq!(same_in_pieces(&chunked), None);
}

#[test]
fn after_an_upgrade_or_connect_or_anything_unsure_it_stops_watching() {
    let dup = b"POST /d HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz";
    for first in [
        &b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(same_in_pieces(&[first, dup].concat()), None, "{first:?}");
    }
    // An oversized head is hyper's to refuse.
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX + 10, b'a');
    assert_eq!(cut_at(&[&big[..], b"\r\n\r\n", dup].concat(), 100), None);
}

#[test]
fn once_cut_nothing_more_passes() {
    let mut g = Guard::new(MAX);
    let bad = b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(g.scan(bad), Verdict::Cut(bad.len()));
    assert_eq!(g.scan(b"GET / HTTP/1.1\r\n\r\n"), Verdict::Stop);
}

#[test]
fn a_fragment_in_the_target_is_cut() {
    let bad = b"GET /a#f HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = [FINE, bad].concat();
    assert_eq!(same_in_pieces(&stream), Some(stream.len()));
}

/// Found by fuzzing (`fuzz/fuzz_targets/h1_guard.rs`): a head longer than
/// the limit was judged when it came in one read (and cut, were its framing
/// refused) but left to hyper when it came in several. hyper refuses it
/// either way; the guard now stops watching either way.
#[test]
fn an_oversized_head_is_left_to_hyper_in_any_pieces() {
    let mut big = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\nX: ".to_vec();
    big.resize(MAX + 10, b'a');
    let stream = [&big[..], b"\r\n\r\nz", FINE].concat();
    for step in [stream.len(), MAX + 14, MAX, 4096, 100, 7] {
        assert_eq!(cut_at(&stream, step), None, "pieces of {step}");
    }
    // One byte short of the limit, it is judged in any pieces.
    let head_len = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    big.truncate(MAX - 4);
    let stream = [&big[..], b"\r\n\r\nz"].concat();
    assert_eq!(head_len(&stream), MAX);
    for step in [stream.len(), MAX, 4096, 100, 7] {
        assert_eq!(cut_at(&stream, step), Some(MAX), "pieces of {step}");
    }
}
