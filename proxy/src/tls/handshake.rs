//! Why a TLS handshake failed, as a short metric label
//! (`weft_tls_handshakes_total{direction, result}`).

use rustls::{AlertDescription, CertificateError, Error as TlsError};
use std::io;

/// `ok`, or the reason a handshake failed: `unknown_ca` (the peer's chain
/// does not lead to the mesh CA), `wrong_identity` (not the SPIFFE ID the
/// endpoint must present), `expired`, `bad_certificate`, `no_certificate`
/// (a client without one), `peer_rejected` (the other side sent an alert:
/// it refused our certificate), `incompatible` (versions, ALPN, ciphers),
/// `protocol` (not TLS, or broken TLS), `io` (the connection dropped),
/// `timeout`.
pub(crate) fn result(r: &Result<(), &io::Error>) -> &'static str {
    let e = match r {
        Ok(()) => return "ok",
        Err(e) => e,
    };
    if e.kind() == io::ErrorKind::TimedOut {
        return "timeout";
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
        Some(t) => reason(t),
        None => "io",
    }
}

fn reason(e: &TlsError) -> &'static str {
    match e {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "wrong_identity"
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "expired",
            _ => "bad_certificate",
        },
        TlsError::NoCertificatesPresented => "no_certificate",
        TlsError::AlertReceived(a) => match a {
            AlertDescription::ProtocolVersion
            | AlertDescription::NoApplicationProtocol
            | AlertDescription::HandshakeFailure => "incompatible",
            _ => "peer_rejected",
        },
        TlsError::PeerIncompatible(_) | TlsError::NoApplicationProtocol => "incompatible",
        _ => "protocol",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_of(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn reasons() {
        assert_eq!(result(&Ok(())), "ok");
        let cases = [
            (
                TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_ca",
            ),
            (
                TlsError::InvalidCertificate(CertificateError::NotValidForName),
                "wrong_identity",
            ),
            (
                TlsError::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                TlsError::InvalidCertificate(CertificateError::Revoked),
                "bad_certificate",
            ),
            (TlsError::NoCertificatesPresented, "no_certificate"),
            (
                TlsError::AlertReceived(AlertDescription::BadCertificate),
                "peer_rejected",
            ),
            (
                TlsError::AlertReceived(AlertDescription::NoApplicationProtocol),
                "incompatible",
            ),
            (TlsError::General("x".into()), "protocol"),
        ];
        for (e, want) in cases {
            let desc = format!("{e:?}");
            assert_eq!(result(&Err(&io_of(e))), want, "{desc}");
        }
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(result(&Err(&reset)), "io");
        let t = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(result(&Err(&t)), "timeout");
    }
}
