//! Config source `ssm:/parameter/name`: reads the config text from AWS SSM Parameter Store,
//! before any parsing. Does I/O (network, AWS credentials); only `source` calls it.
//!
//! Credentials, region and endpoint come from the AWS SDK's default chain: `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, environment credentials, SSO / shared profiles, the ECS task role
//! and the EC2 instance profile. TLS is rustls on ring.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

/// How long one read may take in all, retries included; a reload poll must not hang.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One client for the life of the process: it keeps the credentials cache and connections.
static CLIENT: OnceCell<Client> = OnceCell::const_new();

async fn client() -> &'static Client {
    CLIENT
        .get_or_init(|| async {
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https();
            let timeouts = TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build();
            let config = aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                .timeout_config(timeouts)
                .load()
                .await;
            Client::new(&config)
        })
        .await
}

/// The value of parameter `name` (e.g. `/egress/policy`), decrypted if it is a
/// SecureString. Errors are one line naming the parameter and what went wrong.
pub async fn read(name: &str) -> Result<String, String> {
    let client = client().await;
    if client.config().region().is_none() {
        return Err(format!(
            "cannot read ssm:{name}: no AWS region configured (set AWS_REGION, or a region in the AWS profile)"
        ));
    }
    let output = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| format!("cannot read ssm:{name}: {}", describe(&e)))?;
    output
        .parameter
        .and_then(|p| p.value)
        .ok_or_else(|| format!("cannot read ssm:{name}: the parameter has no value"))
}

/// `Kind: detail`, on one line: the AWS error kind, then what AWS or the SDK said.
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = match err {
        SdkError::ServiceError(ctx) => ctx
            .err()
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| chain(err)),
        _ => chain(err),
    };
    let kind = match err {
        SdkError::ServiceError(ctx) => match ctx.err().code() {
            Some("ParameterNotFound") => {
                "ParameterNotFound (no such parameter in this account and region)".to_owned()
            }
            Some("AccessDeniedException") => {
                "AccessDenied (needs ssm:GetParameter on the parameter, and kms:Decrypt on its key)"
                    .to_owned()
            }
            Some(code) if code.contains("KMS") || code == "InvalidKeyId" => {
                format!("{code} (the parameter's KMS key could not be used)")
            }
            Some(code) => code.to_owned(),
            None => "service error".to_owned(),
        },
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(ctx) if ctx.is_timeout() => "timed out".to_owned(),
        SdkError::DispatchFailure(ctx) if ctx.is_io() => "endpoint unreachable".to_owned(),
        SdkError::DispatchFailure(_) if detail.contains("credential") => {
            "no AWS credentials".to_owned()
        }
        SdkError::DispatchFailure(_) => "request not sent".to_owned(),
        SdkError::ConstructionFailure(_) => "request not built".to_owned(),
        SdkError::ResponseError(_) => "unreadable response".to_owned(),
        _ => "error".to_owned(),
    };
    format!("{kind}: {detail}")
}

/// An error and its sources, `a: b: c`, on one line, without repeats. Like
/// [`DisplayErrorContext`] but without its trailing `Debug` dump (raw responses, headers).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        return DisplayErrorContext(err).to_string();
    }
    parts.join(": ")
}
