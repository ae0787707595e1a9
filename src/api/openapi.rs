//! The OpenAPI document's frame: title, security scheme, tags. Paths and schemas come
//! from the handlers' `#[utoipa::path]` attributes through `utoipa-axum`'s router.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "migroute agent",
        description = "Per-PE agent that moves the network along with a live-migrating VM."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "migrations", description = "Migration phases on this PE"),
        (name = "bgp", description = "The embedded BGP speaker"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
