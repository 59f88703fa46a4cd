//! A tiny real DNS server for discovery tests: UDP and TCP on one loopback
//! port, answering A queries from a table the test changes at will.
//!
//! Messages are encoded by hand per RFC 1035 (header, the question echoed,
//! answers pointing back at it with 0xC00C). What it answers:
//!
//! | query | answer |
//! | --- | --- |
//! | A for a name in the table | NOERROR, one A record per address, the current TTL |
//! | any other type for a name in the table (AAAA) | NOERROR, no answers |
//! | a name not in the table | NXDOMAIN |
//! | anything, in [`Mode::ServFail`] | SERVFAIL |
//! | anything, in [`Mode::Silent`] | nothing (the client times out) |
//!
//! Every query is counted (by name and type) before it is answered.

use crate::Upstream;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

const RCODE_NOERROR: u8 = 0;
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;

/// How the server treats queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the table.
    Answer = 0,
    /// Answer every query with SERVFAIL.
    ServFail = 1,
    /// Read queries (and count them) but never answer.
    Silent = 2,
}

struct State {
    /// Lower-case names without the trailing dot.
    records: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    ttl: AtomicU32,
    mode: AtomicU8,
    /// Queries seen, in order: (name, type).
    queries: Mutex<Vec<(String, u16)>>,
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    /// UDP and TCP both listen here.
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts on 127.0.0.1 with a kernel-chosen port (the same for UDP and
    /// TCP), answering with `ttl_secs`.
    pub async fn start(ttl_secs: u32) -> DnsServer {
        let (udp, tcp) = bind_same_port().await;
        let addr = udp.local_addr().expect("dns local addr");
        let state = Arc::new(State {
            records: Mutex::new(HashMap::new()),
            ttl: AtomicU32::new(ttl_secs),
            mode: AtomicU8::new(Mode::Answer as u8),
            queries: Mutex::new(Vec::new()),
        });
        let udp_task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    if let Some(resp) = state.handle(&buf[..n]) {
                        let _ = udp.send_to(&resp, peer).await;
                    }
                }
            })
        };
        let tcp_task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        loop {
                            let mut len = [0u8; 2];
                            if stream.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                            if stream.read_exact(&mut msg).await.is_err() {
                                return;
                            }
                            if let Some(resp) = state.handle(&msg) {
                                let mut out = (resp.len() as u16).to_be_bytes().to_vec();
                                out.extend_from_slice(&resp);
                                if stream.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            })
        };
        DnsServer {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Sets the A records of `name` (replacing any); an empty list answers NOERROR with no records.
    pub fn set(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.state
            .records
            .lock()
            .unwrap()
            .insert(normalize(name), addrs.to_vec());
    }

    /// Forgets `name`: it answers NXDOMAIN from now on.
    pub fn remove(&self, name: &str) {
        self.state.records.lock().unwrap().remove(&normalize(name));
    }

    pub fn set_ttl(&self, secs: u32) {
        self.state.ttl.store(secs, Ordering::Relaxed);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Queries seen so far for `name` of type `qtype`.
    pub fn queries(&self, name: &str, qtype: u16) -> usize {
        let name = normalize(name);
        self.state
            .queries
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, t)| *n == name && *t == qtype)
            .count()
    }

    /// Every query seen so far, in order: (name, type).
    pub fn all_queries(&self) -> Vec<(String, u16)> {
        self.state.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl State {
    fn handle(&self, query: &[u8]) -> Option<Vec<u8>> {
        let parsed = parse_query(query);
        if let Ok(q) = &parsed {
            self.queries.lock().unwrap().push((q.name.clone(), q.qtype));
        }
        let mode = self.mode.load(Ordering::Relaxed);
        if mode == Mode::Silent as u8 {
            return None;
        }
        let q = match parsed {
            Ok(q) => q,
            // Too short to even carry an id: nothing sensible to answer.
            Err(None) => return None,
            Err(Some(rcode)) => return Some(header_only(query, rcode)),
        };
        if mode == Mode::ServFail as u8 {
            return Some(encode(&q, RCODE_SERVFAIL, &[], 0));
        }
        if q.qclass != CLASS_IN {
            return Some(encode(&q, RCODE_NOTIMP, &[], 0));
        }
        let records = self.records.lock().unwrap();
        let ttl = self.ttl.load(Ordering::Relaxed);
        Some(match records.get(&q.name) {
            None => encode(&q, RCODE_NXDOMAIN, &[], 0),
            Some(addrs) if q.qtype == TYPE_A => encode(&q, RCODE_NOERROR, addrs, ttl),
            Some(_) => encode(&q, RCODE_NOERROR, &[], 0),
        })
    }
}

/// One parsed question, with the raw bytes needed to answer it.
#[derive(Debug)]
pub struct Query {
    pub id: u16,
    /// Flags word of the query (opcode and RD are echoed).
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section exactly as received (QNAME, QTYPE, QCLASS).
    pub question: Vec<u8>,
}

/// Parses the header and the single question of a query. `Err(Some(rcode))`
/// is a malformed or unsupported query worth answering with that code;
/// `Err(None)` is too short to answer at all.
pub fn parse_query(msg: &[u8]) -> Result<Query, Option<u8>> {
    if msg.len() < 12 {
        return Err(None);
    }
    let word = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (id, flags, qdcount) = (word(0), word(2), word(4));
    if flags & 0x8000 != 0 {
        // A response, not a query.
        return Err(Some(RCODE_FORMERR));
    }
    if (flags >> 11) & 0xF != 0 {
        return Err(Some(RCODE_NOTIMP));
    }
    if qdcount != 1 {
        return Err(Some(RCODE_FORMERR));
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(i).ok_or(Some(RCODE_FORMERR))? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        // Compression pointers (0xC0) and extended label types do not occur in a lone question.
        if len > 63 {
            return Err(Some(RCODE_FORMERR));
        }
        let label = msg.get(i..i + len).ok_or(Some(RCODE_FORMERR))?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    if msg.len() < i + 4 {
        return Err(Some(RCODE_FORMERR));
    }
    let (qtype, qclass) = (word(i), word(i + 2));
    Ok(Query {
        id,
        flags,
        name: labels.join("."),
        qtype,
        qclass,
        question: msg[12..i + 4].to_vec(),
    })
}

/// A response to `q`: header, the question echoed, then one A record per address.
pub fn encode(q: &Query, rcode: u8, addrs: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
    // QR | opcode (echoed) | AA | RD (echoed) | RA | rcode
    let flags =
        0x8000 | (q.flags & 0x7800) | 0x0400 | (q.flags & 0x0100) | 0x0080 | u16::from(rcode & 0xF);
    let mut out = Vec::with_capacity(12 + q.question.len() + addrs.len() * 16);
    for w in [q.id, flags, 1, addrs.len() as u16, 0, 0] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out.extend_from_slice(&q.question);
    for ip in addrs {
        out.extend_from_slice(&[0xC0, 0x0C]); // the name at offset 12: the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A bare error response (no question) for a query that could not be parsed.
fn header_only(query: &[u8], rcode: u8) -> Vec<u8> {
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let flags = 0x8000 | (flags & 0x7900) | 0x0080 | u16::from(rcode & 0xF);
    let mut out = query[..2].to_vec();
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A UDP socket and a TCP listener on the same kernel-chosen loopback port.
async fn bind_same_port() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns udp");
        let port = udp.local_addr().expect("udp addr").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// Upstreams named `names`, on 127.0.0.2, 127.0.0.3, ... all with the same
/// port (a DNS-discovered backend has one port for every address). Linux
/// routes all of 127.0.0.0/8 to the loopback interface.
pub async fn same_port_upstreams(names: &[&str]) -> Vec<Upstream> {
    let ip = |i: usize| Ipv4Addr::new(127, 0, 0, 2 + i as u8);
    'attempt: for _ in 0..50 {
        let first = Upstream::start_on(SocketAddr::new(ip(0).into(), 0), names[0]).await;
        let port = first.addr.port();
        // The port is only known free on the first address: check the others
        // before starting upstreams there (Upstream::start_on panics on failure).
        for i in 1..names.len() {
            if std::net::TcpListener::bind(SocketAddr::new(ip(i).into(), port)).is_err() {
                continue 'attempt;
            }
        }
        let mut all = vec![first];
        for (i, name) in names.iter().enumerate().skip(1) {
            all.push(Upstream::start_on(SocketAddr::new(ip(i).into(), port), name).await);
        }
        return all;
    }
    panic!("no port free on all of 127.0.0.2..");
}

/// The loopback address [`same_port_upstreams`] puts the `i`-th upstream on.
pub fn loopback(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `svc.weft.test` A IN, id 0x1234, RD, with an EDNS OPT record as resolvers send.
    fn query(qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        for l in ["svc", "weft", "test"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn parses_the_question() {
        let q = parse_query(&query(TYPE_AAAA)).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype, q.qclass),
            (0x1234, "svc.weft.test", TYPE_AAAA, CLASS_IN)
        );
        assert_eq!(q.question.len(), 15 + 4);
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), None);
    }

    #[test]
    fn encodes_answers_per_rfc1035() {
        let q = parse_query(&query(TYPE_A)).unwrap();
        let r = encode(
            &q,
            RCODE_NOERROR,
            &[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            7,
        );
        // id, QR|AA|RD|RA NOERROR, 1 question, 2 answers
        assert_eq!(r[..12], [0x12, 0x34, 0x85, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
        assert_eq!(r[12..12 + q.question.len()], q.question[..]);
        let a = &r[12 + q.question.len()..];
        assert_eq!(a.len(), 32);
        assert_eq!(
            a[..16],
            [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 7, 0, 4, 127, 0, 0, 2]
        );
        assert_eq!(
            a[16..],
            [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 7, 0, 4, 127, 0, 0, 3]
        );
        let nx = encode(&q, RCODE_NXDOMAIN, &[], 0);
        assert_eq!(nx[2..8], [0x85, 0x83, 0, 1, 0, 0]);
    }
}
