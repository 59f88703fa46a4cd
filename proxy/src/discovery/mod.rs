//! Where endpoints come from besides the static lists in the config
//! (compiled with the snapshot): DNS names, watched here.
pub mod dns;
