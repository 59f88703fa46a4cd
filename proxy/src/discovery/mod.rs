//! Where endpoints come from: static lists in the config (applied when the
//! snapshot is compiled) and DNS names watched here.
pub mod dns;
