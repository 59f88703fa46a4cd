//! The proxy's side of mesh TLS: the credentials the data path uses (and
//! the TLS configs made from them, cached per peer), and why handshakes
//! fail. Identities themselves (SPIFFE IDs, certificates, verifiers) are
//! `weft_mesh::identity`.

pub(crate) mod handshake;
pub(crate) mod mesh;
