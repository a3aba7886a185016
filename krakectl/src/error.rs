//! What can make a krakectl command fail, and its exit code.

use crate::config::ConfigError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API or the connection to it failed.
    #[error("{0}")]
    Client(#[from] krake_client::Error),
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file named on the command line cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file named on the command line is not what it should be.
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Flags that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// 2 for usage errors (as clap's), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
