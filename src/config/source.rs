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
            Source::File(path) => {
                let path = path.clone();
                super::worker::run(move || {
                    read_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .await
                .map_err(|e| format!("reading the config failed: {e}"))?
            }
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

/// The file's text, read no further than one byte past the size limit: a huge file is
/// refused for its size without being held in memory whole. Blocking: runs on the config
/// thread.
fn read_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > super::bounds::MAX_CONFIG_BYTES as u64 {
        return Err(std::io::Error::other(format!(
            "it is {:.1} MiB; a config may be at most {} MiB",
            size as f64 / (1024.0 * 1024.0),
            super::bounds::MAX_CONFIG_BYTES >> 20
        )));
    }
    let mut text = String::new();
    let limit = super::bounds::MAX_CONFIG_BYTES as u64 + 1;
    file.take(limit).read_to_string(&mut text)?;
    Ok(text)
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

/// A config as read from its source: the text (which reload compares to spot a change) and
/// the checked config it parsed to.
pub struct Loaded {
    pub text: String,
    pub config: super::Config,
}

/// Why a source gave no config: it could not be read, or what it holds is invalid.
#[derive(Debug)]
pub enum LoadError {
    Read(String),
    Invalid(super::Problems),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read(e) => f.write_str(e),
            LoadError::Invalid(problems) => write!(f, "{problems}"),
        }
    }
}

impl Source {
    /// Reads and checks the config.
    pub async fn load(&self) -> Result<Loaded, LoadError> {
        let text = self.read().await.map_err(LoadError::Read)?;
        parse(text).await
    }
}

/// Checks config text on the config thread: a hostile or huge config must not hold up a
/// thread that serves connections.
pub async fn parse(text: String) -> Result<Loaded, LoadError> {
    let parsed = super::worker::run(move || {
        super::Config::from_yaml(&text).map(|config| Loaded { text, config })
    })
    .await
    .map_err(|e| LoadError::Read(format!("parsing the config failed: {e}")))?;
    parsed.map_err(LoadError::Invalid)
}
