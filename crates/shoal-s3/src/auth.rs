//! Who may call the gateway: access keys and their secrets.
//!
//! s3s checks every signature (headers, presigned URLs, chunked payloads)
//! with the secret this gives for the request's access key; an unknown key
//! is refused as `InvalidAccessKeyId`, as S3 does.

use std::collections::HashMap;

use s3s::S3Result;
use s3s::auth::{S3Auth, SecretKey};

use crate::server::Credential;

/// The configured users.
pub struct Keys(HashMap<String, String>);

impl Keys {
    pub fn new(credentials: &[Credential]) -> Self {
        Keys(credentials.iter().map(|c| (c.access_key.clone(), c.secret_key.clone())).collect())
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key) {
            Some(secret) => Ok(secret.clone().into()),
            None => Err(s3s::s3_error!(InvalidAccessKeyId, "the access key is not known to this gateway")),
        }
    }
}
