//! Plan files (`migroute migrate --plan vm1.toml`): TOML into a validated
//! [`MigrationPlan`], every error naming the field (TOML's own errors carry the key and
//! line; [`MigrationPlan::validate`] names the dotted field).

use std::path::{Path, PathBuf};

use migroute_orchestration::migration::{MigrationPlan, PlanError};
use thiserror::Error;

/// Why a plan file is unusable.
#[derive(Debug, Error)]
pub enum PlanFileError {
    /// Cannot be read.
    #[error("plan {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the plan's shape.
    #[error("plan {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// TOML's error, with key and line.
        #[source]
        source: toml::de::Error,
    },
    /// TOML of the right shape with unusable values.
    #[error("plan {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which field and why.
        #[source]
        source: PlanError,
    },
}

/// Parses and validates plan text (`path` only names it in errors).
pub fn parse_plan(text: &str, path: &Path) -> Result<MigrationPlan, PlanFileError> {
    let plan: MigrationPlan = toml::from_str(text).map_err(|source| PlanFileError::Parse {
        path: path.into(),
        source,
    })?;
    plan.validate().map_err(|source| PlanFileError::Invalid {
        path: path.into(),
        source,
    })?;
    Ok(plan)
}

/// Reads, parses and validates a plan file.
pub fn load_plan(path: &Path) -> Result<MigrationPlan, PlanFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: path.into(),
        source,
    })?;
    parse_plan(&text, path)
}

#[cfg(test)]
mod tests;
