//! The connection to one registry: the `oci-client` client built from the
//! registry settings (TLS roots, plain HTTP for insecure hosts, credentials
//! from Docker's `config.json`), and the mapping of its errors to our kinds.
//!
//! `oci-client` speaks the distribution protocol (the `/v2/` API, the
//! bearer-token and basic auth challenges, manifests, blob streams). We chose
//! it over hand-written HTTP because it is the maintained client of the
//! ORAS/Krustlet lineage, already handles every auth flow real registries use
//! (Docker Hub, GHCR, ECR, Harbor, distribution), and rides on `reqwest` and
//! `rustls`, so no system OpenSSL is needed. What it does not do we do around
//! it: size limits, our own digest check while a blob lands, the retry.

use std::fs;

use base64::Engine;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use crate::error::MicrosandboxError;
use crate::home::RegistrySettings;

/// How long to wait for a registry to accept a connection, and then for
/// each read: a registry that stops answering fails the pull instead of
/// hanging it.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A client for the registry of one reference, and the credentials to use.
pub(crate) struct Connection {
    pub client: Client,
    pub auth: RegistryAuth,
    /// Whether plain HTTP may be tried after TLS fails.
    pub insecure: bool,
    /// A plain HTTP client with the same TLS settings, for the one request
    /// `oci-client` cannot bound: a manifest, read at most
    /// [`MAX_MANIFEST_BYTES`](super::MAX_MANIFEST_BYTES).
    http: reqwest::Client,
    /// `https`, or `http` for an insecure host's fallback.
    scheme: &'static str,
    /// The `Authorization` header of manifest requests, found once.
    authorization: tokio::sync::OnceCell<Option<HeaderValue>>,
}

impl Connection {
    /// A client for `reference`'s registry over TLS, with the credentials
    /// Docker's `config.json` holds for it (anonymous when none).
    pub(crate) fn open(
        settings: &RegistrySettings,
        reference: &Reference,
    ) -> Result<Self, MicrosandboxError> {
        let registry = reference.resolve_registry().to_string();
        let (client, http) = build_client(settings, reference, ClientProtocol::Https)?;
        Ok(Self {
            client,
            auth: docker_credentials(settings, reference.registry()),
            insecure: settings.is_insecure(&registry) || settings.is_insecure(reference.registry()),
            http,
            scheme: "https",
            authorization: tokio::sync::OnceCell::new(),
        })
    }

    /// The same registry over plain HTTP (for an insecure host whose TLS
    /// attempt failed, as Docker does).
    pub(crate) fn over_http(
        &self,
        settings: &RegistrySettings,
        reference: &Reference,
    ) -> Result<Self, MicrosandboxError> {
        let registry = reference.resolve_registry().to_string();
        let (client, http) = build_client(
            settings,
            reference,
            ClientProtocol::HttpsExcept(vec![registry]),
        )?;
        Ok(Self {
            client,
            auth: self.auth.clone(),
            insecure: self.insecure,
            http,
            scheme: "http",
            authorization: tokio::sync::OnceCell::new(),
        })
    }

    /// The raw manifest `reference` names (one of `accept`) and its digest
    /// (the registry's `Docker-Content-Digest`, else the one asked for,
    /// else its hash). A body over `limit` bytes is refused by its
    /// `Content-Length` before it is read, and one without a length as soon
    /// as it passes the limit: a hostile registry cannot make us hold more.
    pub(crate) async fn fetch_manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        limit: usize,
    ) -> Result<(Vec<u8>, String), OciDistributionError> {
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository(),
            reference
                .digest()
                .unwrap_or_else(|| reference.tag().unwrap_or("latest")),
        );
        let mut request = self.http.get(&url).header(ACCEPT, accept.join(", "));
        if let Some(value) = self.authorization(reference).await? {
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await?;
        let status = response.status();
        let over = |n: u64| {
            OciDistributionError::GenericError(Some(format!(
                "its manifest is {n} bytes or more, over the {limit}-byte limit"
            )))
        };
        let limit_here = if status.is_success() { limit } else { 64 << 10 };
        if status.is_success()
            && let Some(length) = response.content_length()
            && length > limit as u64
        {
            return Err(over(length));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > limit_here {
                if status.is_success() {
                    return Err(over(body.len() as u64));
                }
                break;
            }
        }
        match status.as_u16() {
            200 => {}
            401 => return Err(OciDistributionError::UnauthorizedError { url }),
            code => {
                return Err(OciDistributionError::ServerError {
                    code,
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                });
            }
        }
        let digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| reference.digest().map(str::to_string))
            .unwrap_or_else(|| crate::digest::sha256_digest_string(&body));
        Ok((body, digest))
    }

    /// `Bearer <token>` (the registry's challenge answered by `oci-client`),
    /// or `Basic` with the configured credentials, or nothing.
    async fn authorization(
        &self,
        reference: &Reference,
    ) -> Result<Option<HeaderValue>, OciDistributionError> {
        self.authorization
            .get_or_try_init(|| async {
                let token = self
                    .client
                    .auth(reference, &self.auth, RegistryOperation::Pull)
                    .await?;
                let value = match (token, &self.auth) {
                    (Some(token), _) => format!("Bearer {token}"),
                    (None, RegistryAuth::Basic(user, password)) => {
                        let pair = format!("{user}:{password}");
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(pair)
                        )
                    }
                    (None, _) => return Ok(None),
                };
                HeaderValue::from_str(&value).map(Some).map_err(|_| {
                    OciDistributionError::GenericError(Some(
                        "the credentials are not a valid header".into(),
                    ))
                })
            })
            .await
            .cloned()
    }
}

fn build_client(
    settings: &RegistrySettings,
    reference: &Reference,
    protocol: ClientProtocol,
) -> Result<(Client, reqwest::Client), MicrosandboxError> {
    install_crypto_provider();
    let mut extra_root_certificates = Vec::new();
    if let Some(ca) = &settings.ca_file {
        let pem = fs::read(ca).map_err(|e| {
            MicrosandboxError::InvalidConfig(format!(
                "cannot read the registry CA file {}: {e}",
                ca.display()
            ))
        })?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem,
        });
    }
    let mut http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    for cert in &extra_root_certificates {
        let certs = reqwest::Certificate::from_pem_bundle(&cert.data)
            .map_err(|e| registry_error(reference, &e.into()))?;
        http = http.tls_certs_merge(certs);
    }
    let http = http
        .build()
        .map_err(|e| registry_error(reference, &e.into()))?;
    let config = ClientConfig {
        protocol,
        extra_root_certificates,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        // We pick the platform ourselves, from the raw index.
        platform_resolver: None,
        // A blob goes as one PUT whose body streams from its file: two
        // requests a blob, where chunks take one more per 4 MiB.
        use_monolithic_push: true,
        ..ClientConfig::default()
    };
    let client = Client::try_from(config).map_err(|e| registry_error(reference, &e))?;
    Ok((client, http))
}

/// `rustls` needs one process-wide crypto provider; `ring` is ours (a
/// binding's host may have installed one first, which is as good).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Credentials for `registry` from Docker's `config.json` (`auths.<host>.auth`,
/// base64 of `user:password`), else anonymous. Credential helpers are not
/// run: that would execute programs named by a file.
fn docker_credentials(settings: &RegistrySettings, registry: &str) -> RegistryAuth {
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: std::collections::HashMap<String, DockerAuth>,
    }
    #[derive(Deserialize)]
    struct DockerAuth {
        #[serde(default)]
        auth: Option<String>,
    }
    let Some(dir) = &settings.docker_config_dir else {
        return RegistryAuth::Anonymous;
    };
    let Some(config) = fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<DockerConfig>(&b).ok())
    else {
        return RegistryAuth::Anonymous;
    };
    let wanted: &[&str] = if registry == "docker.io" {
        &["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        &[registry]
    };
    let host_of = |key: &str| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        key.split('/').next().unwrap_or(key).to_string()
    };
    config
        .auths
        .iter()
        .filter(|(key, _)| wanted.contains(&host_of(key).as_str()))
        .filter_map(|(_, entry)| entry.auth.as_deref())
        .filter_map(|auth| base64::engine::general_purpose::STANDARD.decode(auth).ok())
        .filter_map(|raw| String::from_utf8(raw).ok())
        .find_map(|pair| {
            pair.split_once(':')
                .map(|(user, pass)| RegistryAuth::Basic(user.into(), pass.into()))
        })
        .unwrap_or(RegistryAuth::Anonymous)
}

/// Whether `err` failed before any HTTP exchange (refused connection, TLS
/// handshake): the case where an insecure host is retried over HTTP and a
/// blob download is retried once.
pub(crate) fn is_transport(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::RequestError(e) => {
            e.is_connect() || e.is_timeout() || e.is_body() || e.is_request()
        }
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Our error for a failed registry call about `reference`: an unknown
/// repository, tag or digest is `ImageNotFound`, everything else `Registry`.
pub(crate) fn registry_error(
    reference: &Reference,
    err: &OciDistributionError,
) -> MicrosandboxError {
    let reference_text = reference.whole();
    let not_found = || MicrosandboxError::ImageNotFound {
        reference: format!("{reference_text} (the registry does not have it)"),
    };
    let refused = || MicrosandboxError::Registry {
        reference: reference_text.clone(),
        reason: format!(
            "{} refused the credentials (check `auths` in Docker's config.json)",
            reference.registry()
        ),
    };
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                refused()
            } else {
                MicrosandboxError::Registry {
                    reference: reference_text.clone(),
                    reason: error_chain(err),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => refused(),
        OciDistributionError::GenericError(Some(reason)) => MicrosandboxError::Registry {
            reference: reference_text.clone(),
            reason: reason.clone(),
        },
        _ => MicrosandboxError::Registry {
            reference: reference_text.clone(),
            reason: error_chain(err),
        },
    }
}

/// `err` (from the plain-HTTP retry of an insecure host) with the reason
/// its TLS attempt failed, so a user sees both.
pub(crate) fn after_tls_failure(
    err: MicrosandboxError,
    tls: &OciDistributionError,
) -> MicrosandboxError {
    match err {
        MicrosandboxError::Registry { reference, reason } => MicrosandboxError::Registry {
            reference,
            reason: format!("{reason} (over TLS: {})", error_chain(tls)),
        },
        other => other,
    }
}

/// An error and its sources, one line (reqwest hides the cause otherwise).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}
