//! A whole exchange of the lean client (`h1/client/`): the target plays the
//! upstream on a loopback connection, answering the request with the fuzz
//! bytes, and the client reads the head, settles its framing and reads the
//! body (by length, chunked with trailers, or until close) to its end.
//! Sent in one write or in pieces, the answer must read the same; a body
//! read by its length is exactly that long; a connection goes back to its
//! pool only after a body that ended cleanly.
//!
//! Flags: bits 0-1 pick the method (GET, HEAD, DELETE, OPTIONS).

#![no_main]

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use weft_fuzz::Input;
use weft_proxy::fuzz_surface::{exchange, Exchange};

struct World {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
}

thread_local! {
    static WORLD: World = {
        // libFuzzer's own `main` leaves SIGPIPE at its default; a write to
        // a connection the client has dropped must fail, not kill us.
        // SAFETY: setting a signal's disposition to "ignore" touches no
        // memory of ours.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            listener: TcpListener::bind("127.0.0.1:0").expect("listener"),
        }
    };
}

/// What the client made of the answer, for comparing two runs.
type Seen = Result<(StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>, bool), ()>;

fn run(world: &World, method: &Method, pieces: &[&[u8]]) -> (Seen, Option<Exchange>) {
    let addr = world.listener.local_addr().expect("address");
    let client = TcpStream::connect(addr).expect("connect");
    let (peer, _) = world.listener.accept().expect("accept");
    // No TIME_WAIT left behind by a million connections.
    let _ = socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO));
    client.set_nonblocking(true).expect("nonblocking");
    peer.set_nonblocking(true).expect("nonblocking");
    world.rt.block_on(async {
        let client = tokio::net::TcpStream::from_std(client).expect("register");
        let mut peer = tokio::net::TcpStream::from_std(peer).expect("register");
        let answer = async {
            for piece in pieces {
                if peer.write_all(piece).await.is_err() {
                    break;
                }
                // Let the client read this piece before the next comes.
                tokio::task::yield_now().await;
            }
            let _ = peer.shutdown().await;
            peer
        };
        let (got, peer) = tokio::join!(exchange(client, method.clone()), answer);
        drop(peer);
        match got {
            Ok(x) => (
                Ok((
                    x.status,
                    x.headers.clone(),
                    x.body.clone(),
                    x.trailers.clone(),
                    x.error.is_some(),
                )),
                Some(x),
            ),
            Err(_) => (Err(()), None),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let method = [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS]
        [usize::from(input.flags & 3)]
    .clone();
    WORLD.with(|world| {
        let (whole, x) = run(world, &method, &[input.bytes]);
        let (split, _) = run(world, &method, &input.pieces());
        assert_eq!(whole, split, "the answer depends on how it was read");
        let Some(x) = x else { return };
        assert!(!x.status.is_informational(), "an interim answer as final");
        assert!(!x.headers.contains_key(TRANSFER_ENCODING));
        let lengths: Vec<_> = x.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert!(lengths.len() <= 1, "more than one Content-Length");
        let bodiless = method == Method::HEAD || x.status == 204 || x.status == 304;
        if bodiless {
            assert!(
                x.body.is_empty() && x.error.is_none(),
                "a body where none is"
            );
        } else if let (Some(n), None) = (lengths.first(), &x.error) {
            let n: usize = n.to_str().unwrap().parse().unwrap();
            assert_eq!(x.body.len(), n, "a body of another length than given");
        }
        assert!(x.body.len() <= input.bytes.len());
        if x.pooled {
            assert!(x.error.is_none(), "pooled after a failed body");
        }
    });
});
