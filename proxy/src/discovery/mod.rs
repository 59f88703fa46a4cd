//! Where endpoints come from: static lists in the config (applied when the
//! snapshot is compiled), DNS names watched here, and the control plane
//! (mesh mode).
pub mod control_plane;
pub mod dns;
