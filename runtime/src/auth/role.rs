//! Roles a token carries, and what each may do.

use serde::{Deserialize, Serialize};

/// What a token is for. A token has exactly one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A kiosk: predictions, and reading back its own.
    Kiosk,
    /// Someone who looks: stored predictions, bundles, the audit trail, detailed health.
    Viewer,
    /// Everything.
    Admin,
    /// A scraper: /metrics only.
    Metrics,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Kiosk, Role::Viewer, Role::Admin, Role::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiosk => "kiosk",
            Self::Viewer => "viewer",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }

    /// Whether this role may do what `permission` names. The one table of who may do what.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission as P;
        matches!(
            (self, permission),
            (_, P::Open)
                | (Self::Admin, _)
                | (Self::Kiosk, P::Predict | P::Describe | P::ReadOwnPrediction | P::RecordOutcome)
                | (Self::Viewer, P::Describe | P::ReadOwnPrediction | P::ReadPredictions | P::Inspect)
                | (Self::Metrics, P::Metrics)
        )
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("a role is kiosk, viewer, admin or metrics, not {text:?}"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route needs. Each route declares one (see `http::router`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Anyone, without a token: liveness and readiness for load balancers.
    Open,
    /// Make predictions (v1 predict and batch, v2 infer).
    Predict,
    /// Read what is served: bundles and their schemas, model metadata, the API document.
    Describe,
    /// Read a stored prediction the caller made itself (kiosks); viewers read any.
    ReadOwnPrediction,
    /// Read any stored prediction.
    ReadPredictions,
    /// Record what really happened to a prediction the caller made itself (kiosks); admins
    /// to any.
    RecordOutcome,
    /// The audit trail and detailed health.
    Inspect,
    /// The Prometheus exposition.
    Metrics,
    /// Operations that change state.
    Admin,
}

impl Permission {
    /// The roles granted this permission, for documents and error messages.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|role| role.grants(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission as P;

    #[test]
    fn the_table_of_who_may_do_what() {
        let expect = |permission: Permission, roles: &[Role]| assert_eq!(permission.roles(), roles, "{permission:?}");
        expect(P::Open, &Role::ALL);
        expect(P::Predict, &[Role::Kiosk, Role::Admin]);
        expect(P::Describe, &[Role::Kiosk, Role::Viewer, Role::Admin]);
        expect(P::ReadOwnPrediction, &[Role::Kiosk, Role::Viewer, Role::Admin]);
        expect(P::ReadPredictions, &[Role::Viewer, Role::Admin]);
        expect(P::RecordOutcome, &[Role::Kiosk, Role::Admin]);
        expect(P::Inspect, &[Role::Viewer, Role::Admin]);
        expect(P::Metrics, &[Role::Admin, Role::Metrics]);
        expect(P::Admin, &[Role::Admin]);
    }
}
