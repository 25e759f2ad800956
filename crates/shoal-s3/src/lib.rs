//! Shoal's S3 gateway: buckets and objects over the client library, for
//! tools that speak S3 (boto3, the AWS CLI, rclone).
//!
//! A bucket is a top-level directory, an object key a path below it
//! ([`keys`]). [`gateway`] implements the S3 operations with s3s (which
//! does SigV4, routing and the XML); [`store`] is the IO over the client
//! library (objects written whole or not at all, streamed reads, listing
//! walks); [`listing`], [`rules`] and [`multipart`] are the decisions as
//! plain functions; [`errors`] is the one table from client errors to S3
//! codes; [`server`] accepts connections, and [`auth`] holds the keys s3s
//! checks signatures with.
//!
//! Object metadata (ETag, content type, `x-amz-meta-*`) is kept in the
//! file's extended attributes (`user.s3.*`), so it follows the file through
//! a rename and goes with it when it is removed.

pub mod auth;
pub mod errors;
pub mod gateway;
pub mod keys;
pub mod listing;
pub mod multipart;
pub mod rules;
pub mod server;
pub mod store;

pub use server::{Config, Credential, serve};
