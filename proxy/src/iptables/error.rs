//! The failures of `weft-proxy iptables`.

/// Failures of installing or removing the rules; carries the command line and iptables'
/// stderr because the operator has to act on exactly what iptables said.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// An option was rejected by [`InterceptOptions::validate`]: (CLI flag, reason).
    #[error("invalid {0}: {1}")]
    InvalidOption(&'static str, String),
    /// The iptables program could not be started (missing binary, permissions).
    #[error("could not run `{0}`: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// iptables ran and failed: (command line, exit status, stderr).
    #[error("`{0}` failed ({1}): {2}")]
    Failed(String, String, String),
    /// Writing the dry-run or progress output failed.
    #[error("could not write output: {0}")]
    Output(#[from] std::io::Error),
}
