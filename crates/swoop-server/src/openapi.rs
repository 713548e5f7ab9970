//! The OpenAPI document of the REST API, made from the handlers' own `#[utoipa::path]`
//! declarations: [`api_router`] registers each handler under the path and method its
//! declaration gives, so a route cannot be served without being documented, nor documented
//! without being served. Served at `/api/v1/openapi.json`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, executions, files, flows, triggers};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "swoop",
        description = "swoop's REST API, shaped as Kestra's: flows, executions, their logs and files, realtime triggers and cluster nodes. Errors are JSON `{\"message\", \"details\"}`. With authentication on, every path but /health and the webhooks needs HTTP Basic credentials."
    ),
    modifiers(&BasicAuthScheme),
    security(("basicAuth" = [])),
    tags(
        (name = "flows", description = "Flows: YAML sources with revisions"),
        (name = "executions", description = "Executions: run, follow, restart, kill"),
        (name = "logs", description = "Execution logs"),
        (name = "files", description = "Files of an execution (internal storage)"),
        (name = "triggers", description = "Realtime triggers and their health"),
        (name = "system", description = "Liveness and cluster nodes"),
    )
)]
struct ApiDoc;

/// Declares HTTP Basic as the security scheme the document's `security` names.
struct BasicAuthScheme;

impl Modify for BasicAuthScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The API's routes with their document.
pub(crate) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::health))
        .routes(routes!(flows::create))
        .routes(routes!(flows::search))
        .routes(routes!(flows::validate))
        .routes(routes!(flows::get, flows::update, flows::delete))
        .routes(routes!(executions::search))
        .routes(routes!(executions::webhook_get, executions::webhook_post))
        .routes(routes!(executions::create))
        .routes(routes!(executions::get, files::delete_execution))
        .routes(routes!(files::download))
        .routes(routes!(files::metas))
        .routes(routes!(executions::follow))
        .routes(routes!(executions::restart))
        .routes(routes!(executions::kill))
        .routes(routes!(executions::logs))
        .routes(routes!(triggers::search))
        .routes(routes!(triggers::disable))
        .routes(routes!(triggers::enable))
        .routes(routes!(triggers::restart))
        .routes(routes!(executions::replay))
        .routes(routes!(flows::revisions))
        .routes(routes!(crate::cluster_nodes))
}
