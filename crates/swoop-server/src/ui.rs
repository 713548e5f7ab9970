//! A one-page web UI: flows and recent executions, read from the API by the browser.

use axum::response::Html;

pub async fn index() -> Html<&'static str> {
    Html(include_str!("ui.html"))
}
