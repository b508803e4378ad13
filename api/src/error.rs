//! The API's errors and their gRPC statuses.

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid; the message names it.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field, as named in the .proto.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// An alert rule with this id exists.
    #[error("alert rule {0:?} exists")]
    RuleExists(String),
    /// No alert rule has this id.
    #[error("no alert rule {0:?}")]
    NoSuchRule(String),
    /// The rule change could not be written to the rules' log; it did not take effect.
    #[error("{0}")]
    RuleLog(#[from] clickflow_ingest::rule_log::RuleLogError),
    /// Resuming needs updates that are no longer kept.
    #[error("resume_from_ms: {}", not_kept(*kept_from))]
    ResumeTooOld {
        /// The oldest time still kept; `None` when the server keeps no updates.
        kept_from: Option<u64>,
    },
    /// The server could not be started or failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            ApiError::RuleExists(_) => tonic::Status::already_exists(message),
            ApiError::NoSuchRule(_) => tonic::Status::not_found(message),
            ApiError::ResumeTooOld { .. } => tonic::Status::out_of_range(message),
            ApiError::RuleLog(_) => tonic::Status::unavailable(message),
            ApiError::Transport(_) | ApiError::Reflection(_) => tonic::Status::internal(message),
        }
    }
}

/// Why a resume is refused, for [`ApiError::ResumeTooOld`].
fn not_kept(kept_from: Option<u64>) -> String {
    match kept_from {
        Some(time) => format!("updates before {time} are no longer kept"),
        None => "this server keeps no updates to resume from (api.changelog_ms is 0)".to_owned(),
    }
}
