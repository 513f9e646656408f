//! Where attachments live and what may be attached.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, DatabaseConfig, Secret, Vars, bad};

#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub store: FileStoreConfig,
    /// The largest attachment, in bytes.
    pub max_bytes: u64,
    /// Content types an attachment may have (`image/*` style wildcards
    /// allowed), lowercase.
    pub types: Vec<String>,
    /// How long an upload or download URL works.
    pub url_ttl: Duration,
}

#[derive(Debug, Clone)]
pub enum FileStoreConfig {
    /// Files under a directory, served by the node itself (one node).
    Local(PathBuf),
    /// An S3-compatible object store, reached by clients directly through
    /// presigned URLs.
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        access_key: Secret,
        secret_key: Secret,
    },
}

/// What an app usually sends: pictures, PDFs, text, archives, office files.
const DEFAULT_TYPES: &str = "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,\
application/zip,application/vnd.openxmlformats-officedocument.wordprocessingml.document,\
application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

impl FilesConfig {
    pub(super) fn from_vars(vars: &Vars, database: &DatabaseConfig) -> Result<Self, ConfigError> {
        let store = match vars.get("S3_BUCKET") {
            Some(bucket) => {
                let need = |var: &'static str, value: Option<&str>| {
                    value
                        .map(str::to_owned)
                        .ok_or_else(|| bad(var, "required with S3_BUCKET (an S3-compatible store)"))
                };
                let endpoint = need("S3_ENDPOINT", vars.get("S3_ENDPOINT"))?;
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(bad("S3_ENDPOINT", "expected an http(s) URL"));
                }
                FileStoreConfig::S3 {
                    endpoint,
                    bucket: bucket.to_owned(),
                    region: vars.get("S3_REGION").unwrap_or("us-east-1").to_owned(),
                    access_key: Secret::new(need(
                        "S3_ACCESS_KEY_ID",
                        vars.get("S3_ACCESS_KEY_ID"),
                    )?),
                    secret_key: Secret::new(need(
                        "S3_SECRET_ACCESS_KEY",
                        vars.get("S3_SECRET_ACCESS_KEY"),
                    )?),
                }
            }
            None => FileStoreConfig::Local(match vars.get("ATTACHMENTS_DIR") {
                Some(dir) => PathBuf::from(dir),
                // Beside the embedded database, or in the working directory.
                None => match database {
                    DatabaseConfig::Sqlite(path) => path
                        .parent()
                        .map(|p| p.join("ochat-attachments"))
                        .unwrap_or_else(|| PathBuf::from("ochat-attachments")),
                    DatabaseConfig::Postgres(_) => PathBuf::from("ochat-attachments"),
                },
            }),
        };
        let types: Vec<String> = vars
            .get("ATTACHMENT_TYPES")
            .unwrap_or(DEFAULT_TYPES)
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if types.iter().any(|t| !t.contains('/')) {
            return Err(bad(
                "ATTACHMENT_TYPES",
                "expected content types like image/png or image/*, comma separated",
            ));
        }
        let url_ttl = vars.duration("ATTACHMENT_URL_TTL", Duration::from_secs(15 * 60))?;
        if url_ttl > Duration::from_secs(7 * 24 * 3600) {
            return Err(bad("ATTACHMENT_URL_TTL", "at most 7 days (S3's limit)"));
        }
        Ok(Self {
            store,
            max_bytes: vars.positive(
                "MAX_ATTACHMENT_BYTES",
                25 * 1024 * 1024u64,
                "a positive number of bytes",
            )?,
            types,
            url_ttl,
        })
    }

    /// The object store's origin (`scheme://host[:port]`), when there is one.
    pub fn origin(&self) -> Option<String> {
        let FileStoreConfig::S3 { endpoint, .. } = &self.store else {
            return None;
        };
        let (scheme, rest) = endpoint.split_once("://")?;
        let host = rest.split('/').next()?;
        Some(format!("{scheme}://{host}"))
    }

    /// Whether an attachment may have this content type.
    pub fn accepts(&self, content_type: &str) -> bool {
        let t = content_type.to_ascii_lowercase();
        self.types
            .iter()
            .any(|allowed| match allowed.strip_suffix("/*") {
                Some(family) => t.split('/').next() == Some(family) && t.contains('/'),
                None => *allowed == t,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<FilesConfig, ConfigError> {
        let vars = Vars(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        FilesConfig::from_vars(
            &vars,
            &DatabaseConfig::Sqlite(PathBuf::from("data/ochat.db")),
        )
    }

    #[test]
    fn types_match_exactly_or_by_family() {
        let c = config(&[("ATTACHMENT_TYPES", "image/*, Application/PDF")]).unwrap();
        assert!(c.accepts("image/png") && c.accepts("IMAGE/webp") && c.accepts("application/pdf"));
        assert!(!c.accepts("image") && !c.accepts("text/html") && !c.accepts("application/pdfx"));
        assert!(
            matches!(c.store, FileStoreConfig::Local(ref d) if d == &PathBuf::from("data/ochat-attachments"))
        );
        assert_eq!(c.origin(), None);
    }

    #[test]
    fn an_object_store_needs_its_endpoint_and_keys() {
        let err = config(&[("S3_BUCKET", "b")]).unwrap_err();
        assert_eq!(err.var, "S3_ENDPOINT");
        let err = config(&[
            ("S3_BUCKET", "b"),
            ("S3_ENDPOINT", "https://s3.example.com"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "S3_ACCESS_KEY_ID");
        let c = config(&[
            ("S3_BUCKET", "b"),
            ("S3_ENDPOINT", "https://s3.example.com:9000/base"),
            ("S3_ACCESS_KEY_ID", "k"),
            ("S3_SECRET_ACCESS_KEY", "s"),
        ])
        .unwrap();
        assert_eq!(c.origin().as_deref(), Some("https://s3.example.com:9000"));
        let err = config(&[("ATTACHMENT_TYPES", "png")]).unwrap_err();
        assert_eq!(err.var, "ATTACHMENT_TYPES");
    }
}
