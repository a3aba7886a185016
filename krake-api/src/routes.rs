//! The router: every route of every kind, generated from the registry.

use std::any::Any;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use krake_data::registry;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::authentication::authenticate;
use crate::handlers::subresource::SubresourceRef;
use crate::handlers::{KindRef, crud, meta, subresource};
use crate::metrics::track;
use crate::problem::{ApiError, problem_bodies};
use crate::state::ApiState;

/// The API's router over `state`: Krake's routes (section 2.1 of the
/// reference) for every kind of the registry, `/`, `/me`, `/release`, and
/// beyond Krake `/openapi.json`, `/metrics`, `/healthz` and `/readyz`.
/// Every error answer is a problem body, axum's own rejections included.
pub fn router(state: ApiState) -> Router {
    let mut api = Router::new();
    for &kind in registry::ALL {
        let ext = Extension(KindRef(kind));
        let all = kind.collection_path(None);
        let object = if kind.is_namespaced() {
            let collection = kind.collection_path(Some("{namespace}"));
            api = api
                .route(
                    &collection,
                    get(crud::list).post(crud::create).route_layer(ext),
                )
                .route(&all, get(crud::list).route_layer(ext));
            format!("{collection}/{{name}}")
        } else {
            api = api.route(&all, get(crud::list).post(crud::create).route_layer(ext));
            format!("{all}/{{name}}")
        };
        api = api.route(
            &object,
            get(crud::read)
                .put(crud::update)
                .delete(crud::delete)
                .route_layer(ext),
        );
        for sub in kind.subresources {
            api = api.route(
                &format!("{object}/{}", sub.operation),
                put(subresource::subresource)
                    .route_layer(ext)
                    .route_layer(Extension(SubresourceRef(sub))),
            );
        }
    }
    let protected = api
        .route("/", get(meta::root))
        .route("/me", get(meta::me))
        .route("/release", get(meta::release))
        .route_layer(from_fn_with_state(
            state.authenticator().clone(),
            authenticate,
        ));
    let public = Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi));
    let cors = cors_layer(&state.config().cors_origin);
    protected
        .merge(public)
        .fallback(|| async { ApiError::http(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { ApiError::http(StatusCode::METHOD_NOT_ALLOWED) })
        .layer(map_response(problem_bodies))
        .layer(from_fn_with_state(state.metrics().clone(), track))
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        .with_state(state)
}

/// The CORS policy for `cors_origin`.
///
/// `*` lets any web page read responses, but never with credentials: a
/// browser then sends no cookies or client certificates and ignores what
/// comes back from a credentialed request. (Krake mirrors the request's
/// origin and allows credentials, which lets any page a user visits act as
/// the user with their client certificate.) A configured origin is the only
/// one allowed, with credentials, as in Krake. A value that is not a valid
/// header value allows no cross-origin reads at all (krake-server refuses such
/// a configuration before it gets here).
fn cors_layer(origin: &str) -> CorsLayer {
    let methods = [
        Method::DELETE,
        Method::GET,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
    ];
    let layer = CorsLayer::new()
        .allow_methods(methods)
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request());
    if origin == "*" {
        return layer.allow_origin(AllowOrigin::any());
    }
    match HeaderValue::from_str(origin) {
        Ok(value) => layer
            .allow_origin(AllowOrigin::exact(value))
            .allow_credentials(true),
        Err(_) => layer.allow_origin(AllowOrigin::list([])),
    }
}

/// A panic in a handler becomes a 500 problem; the server keeps running.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %message, "handler panicked");
    let mut response = ApiError::Internal(message.to_owned()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::problem::PROBLEM_JSON),
    );
    response
}
