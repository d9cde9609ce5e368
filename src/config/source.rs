//! Where config text comes from: a file path, or `ssm:/parameter/name` for AWS SSM
//! Parameter Store. Does I/O; parsing is elsewhere.

use std::fmt;
use std::path::PathBuf;

/// A config source as given on the command line or in `EGRESS_PROXY_CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Ssm(String),
}

impl Source {
    pub fn parse(text: &str) -> Source {
        match text.strip_prefix("ssm:") {
            Some(name) => Source::Ssm(name.to_owned()),
            None => Source::File(PathBuf::from(text)),
        }
    }

    /// The config text, read now.
    pub async fn read(&self) -> Result<String, String> {
        match self {
            Source::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            Source::Ssm(name) => read_ssm(name).await,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Ssm(name) => write!(f, "ssm:{name}"),
        }
    }
}

#[cfg(not(feature = "ssm"))]
async fn read_ssm(name: &str) -> Result<String, String> {
    Err(format!(
        "cannot read ssm:{name}: this binary was built without the `ssm` feature"
    ))
}

#[cfg(feature = "ssm")]
async fn read_ssm(name: &str) -> Result<String, String> {
    crate::config::ssm::read(name).await
}
