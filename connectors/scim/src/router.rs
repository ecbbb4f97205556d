//! The axum router: SCIM endpoints over a [`DirectoryStore`].
//!
//! Every handler resolves the directory first ([`DirectoryScope`]: bearer
//! token, then the mount path), parses and validates the whole request, then
//! makes at most one write to the store, so each request is atomic.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, RawPathParams, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::{Map, Value, json};

use crate::config::ScimConfig;
use crate::error::ScimError;
use crate::filter::{AttrPath, ScimFilter};
use crate::patch::{self, PatchOperation};
use crate::resource::{self, Projection, etag, etag_matches};
use crate::schema::{self, ResourceKind};
use crate::store::{
    DirectoryStore, GroupRecord, GroupUpdate, ListQuery, MembershipChange, NewMember, Page, SortSpec, StoreError,
    TokenHash, UserRecord,
};

/// The media type of every response.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// How often a read-modify-write retries after losing a race to another
/// request (without `If-Match`).
const WRITE_ATTEMPTS: usize = 3;

struct Shared<S> {
    store: Arc<S>,
    config: ScimConfig,
}

/// Router state.
pub struct ScimState<S> {
    inner: Arc<Shared<S>>,
}

impl<S> Clone for ScimState<S> {
    fn clone(&self) -> Self {
        ScimState { inner: Arc::clone(&self.inner) }
    }
}

/// The SCIM 2.0 router. Mount it with `Router::nest`, under a path with the
/// directory id (`/scim/v2/{directory_id}`, the parameter named by
/// [`ScimConfig::directory_path_param`]) or under a fixed path where the
/// token alone picks the directory. Routes, relative to the mount point:
/// `/Users`, `/Users/{id}`, `/Groups`, `/Groups/{id}`, `/.search`,
/// `/Users/.search`, `/Groups/.search`, `/ServiceProviderConfig`,
/// `/ResourceTypes`, `/ResourceTypes/{id}`, `/Schemas`, `/Schemas/{id}`.
pub fn router<S: DirectoryStore>(store: Arc<S>, config: ScimConfig) -> Router {
    let state = ScimState { inner: Arc::new(Shared { store, config }) };
    Router::new()
        .route("/Users", get(list_users::<S>).post(create_user::<S>))
        .route("/Users/.search", post(search_users::<S>))
        .route("/Users/{id}", get(get_user::<S>).put(replace_user::<S>).patch(patch_user::<S>).delete(delete_user::<S>))
        .route("/Groups", get(list_groups::<S>).post(create_group::<S>))
        .route("/Groups/.search", post(search_groups::<S>))
        .route(
            "/Groups/{id}",
            get(get_group::<S>).put(replace_group::<S>).patch(patch_group::<S>).delete(delete_group::<S>),
        )
        .route("/.search", post(search_all::<S>))
        .route("/ServiceProviderConfig", get(service_provider_config::<S>))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ScimError {
    ScimError::NotFound("no such SCIM endpoint".into())
}

async fn method_not_allowed() -> ScimError {
    ScimError::MethodNotAllowed
}

// ---------------------------------------------------------------- request context

/// The directory a request acts on, resolved from the bearer token and the
/// mount path, and the resource id from the path.
pub struct DirectoryScope {
    /// The directory id.
    pub directory: String,
    /// The directory's absolute SCIM base URL.
    pub base_url: String,
    /// `{id}` of the route, if any.
    pub resource_id: Option<String>,
}

impl<S: DirectoryStore> FromRequestParts<ScimState<S>> for DirectoryScope {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &ScimState<S>) -> Result<Self, Self::Rejection> {
        let shared = &state.inner;
        let token = bearer_token(&parts.headers)?;
        let directory = shared
            .store
            .directory_for_token(&TokenHash::of(token))
            .await?
            .ok_or_else(|| ScimError::Unauthorized("invalid bearer token".into()))?;
        let params = RawPathParams::from_request_parts(parts, state).await.ok();
        let param =
            |name: &str| params.as_ref().and_then(|p| p.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
        if let Some(in_path) = param(&shared.config.directory_path_param)
            && in_path != directory
        {
            // A token of one directory never learns whether another exists.
            return Err(ScimError::NotFound("directory not found".into()));
        }
        Ok(DirectoryScope { base_url: shared.config.base_url_for(&directory), directory, resource_id: param("id") })
    }
}

impl DirectoryScope {
    fn id(&self) -> Result<&str, ScimError> {
        self.resource_id.as_deref().ok_or_else(|| ScimError::NotFound("resource not found".into()))
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ScimError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ScimError::Unauthorized("missing bearer token".into()))?
        .to_str()
        .map_err(|_| ScimError::Unauthorized("invalid authorization header".into()))?;
    let (scheme, token) =
        value.trim().split_once(' ').ok_or_else(|| ScimError::Unauthorized("expected a bearer token".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ScimError::Unauthorized("expected a bearer token".into()));
    }
    Ok(token.trim())
}

// ---------------------------------------------------------------- request parsing

async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/scim+json" && essence != "application/json" {
            return Err(ScimError::UnsupportedMediaType(format!(
                "content type {ct:?} is not application/scim+json or application/json"
            )));
        }
    }
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ScimError::PayloadTooLarge(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ScimError::PayloadTooLarge(limit)
        } else {
            ScimError::invalid_syntax("could not read the request body")
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ScimError::invalid_syntax(format!("malformed JSON: {e}")))
}

/// Query parameters by lowercased name (unknown ones, such as Entra's
/// `aadOptscim062020`, are simply never looked at).
struct QueryParams(HashMap<String, String>);

impl QueryParams {
    fn from_uri(uri: &Uri) -> Result<Self, ScimError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ScimError::invalid_syntax(format!("invalid query string: {e}")))?;
        Ok(QueryParams(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    fn projection(&self, kind: ResourceKind) -> Result<Projection, ScimError> {
        Projection::parse(kind, self.get("attributes"), self.get("excludedAttributes"))
    }
}

/// A listing request, from a query string or a `.search` body.
#[derive(Default)]
struct ListRequest {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn parse_int(name: &str, s: &str) -> Result<i64, ScimError> {
    s.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("{name} must be an integer, got {s:?}")))
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl ListRequest {
    fn from_query(q: &QueryParams) -> Result<Self, ScimError> {
        Ok(ListRequest {
            filter: q.get("filter").map(str::to_string),
            start_index: q.get("startIndex").map(|s| parse_int("startIndex", s)).transpose()?,
            count: q.get("count").map(|s| parse_int("count", s)).transpose()?,
            sort_by: q.get("sortBy").map(str::to_string),
            sort_order: q.get("sortOrder").map(str::to_string),
            attributes: q.get("attributes").map(split_list).unwrap_or_default(),
            excluded: q.get("excludedAttributes").map(split_list).unwrap_or_default(),
        })
    }

    fn from_search_body(body: Value) -> Result<Self, ScimError> {
        let Value::Object(obj) = body else {
            return Err(ScimError::invalid_syntax("a SearchRequest must be a JSON object"));
        };
        let mut req = ListRequest::default();
        for (k, v) in obj {
            let key = k.to_ascii_lowercase();
            let string = |v: Value, name: &str| match v {
                Value::String(s) => Ok(Some(s)),
                Value::Null => Ok(None),
                _ => Err(ScimError::invalid_value(format!("{name} must be a string"))),
            };
            let int = |v: Value, name: &str| match v {
                Value::Number(n) => {
                    n.as_i64().map(Some).ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer")))
                }
                Value::String(s) => parse_int(name, &s).map(Some),
                Value::Null => Ok(None),
                _ => Err(ScimError::invalid_value(format!("{name} must be an integer"))),
            };
            let list = |v: Value, name: &str| match v {
                Value::String(s) => Ok(split_list(&s)),
                Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        _ => Err(ScimError::invalid_value(format!("{name} must list strings"))),
                    })
                    .collect(),
                Value::Null => Ok(Vec::new()),
                _ => Err(ScimError::invalid_value(format!("{name} must be an array"))),
            };
            match key.as_str() {
                "schemas" => {
                    let ok = v.as_array().is_some_and(|l| {
                        l.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(schema::SEARCH_REQUEST_URN)))
                    });
                    if !ok {
                        return Err(ScimError::invalid_value(format!(
                            "schemas must list {}",
                            schema::SEARCH_REQUEST_URN
                        )));
                    }
                }
                "filter" => req.filter = string(v, "filter")?,
                "startindex" => req.start_index = int(v, "startIndex")?,
                "count" => req.count = int(v, "count")?,
                "sortby" => req.sort_by = string(v, "sortBy")?,
                "sortorder" => req.sort_order = string(v, "sortOrder")?,
                "attributes" => req.attributes = list(v, "attributes")?,
                "excludedattributes" => req.excluded = list(v, "excludedAttributes")?,
                _ => {}
            }
        }
        Ok(req)
    }

    /// The store query for one resource type, and the projection.
    fn to_query(&self, kind: ResourceKind, config: &ScimConfig) -> Result<(ListQuery, Projection), ScimError> {
        let filter = match self.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) => {
                let f = ScimFilter::parse(f)?;
                f.validate(kind)?;
                Some(f)
            }
        };
        let sort = match self.sort_by.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(by) => {
                let by = AttrPath::parse(by).map_err(ScimError::invalid_value)?;
                let descending = match self.sort_order.as_deref().map(str::trim) {
                    None | Some("") => false,
                    Some(o) if o.eq_ignore_ascii_case("ascending") => false,
                    Some(o) if o.eq_ignore_ascii_case("descending") => true,
                    Some(o) => {
                        return Err(ScimError::invalid_value(format!(
                            "sortOrder must be ascending or descending, got {o:?}"
                        )));
                    }
                };
                Some(SortSpec { by, descending })
            }
        };
        let start_index = self.start_index.unwrap_or(1).max(1);
        let count = self.count.unwrap_or(config.default_count as i64).clamp(0, config.max_results as i64);
        let projection = Projection::from_lists(kind, &self.attributes, &self.excluded)?;
        let query = ListQuery {
            filter,
            start_index: usize::try_from(start_index).unwrap_or(usize::MAX),
            count: usize::try_from(count).unwrap_or(0),
            sort,
            include_members: kind == ResourceKind::Group && projection.wants("members"),
        };
        Ok((query, projection))
    }
}

// ---------------------------------------------------------------- responses

fn scim_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut res = (status, bytes).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    res
}

fn with_etag(mut res: Response, version: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

fn with_location(mut res: Response, location: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> Response {
    scim_response(
        StatusCode::OK,
        &json!({
            "schemas": [schema::LIST_RESPONSE_URN],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Checks `If-Match` against the current version (412 on mismatch).
fn check_if_match(headers: &HeaderMap, version: &str) -> Result<(), ScimError> {
    match if_match(headers) {
        Some(h) if !etag_matches(&h, version) => {
            Err(ScimError::PreconditionFailed("If-Match does not match the resource's current version".into()))
        }
        _ => Ok(()),
    }
}

/// `If-None-Match` matches: answer 304.
fn not_modified(headers: &HeaderMap, version: &str) -> Option<Response> {
    let h = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    etag_matches(h, version).then(|| with_etag(StatusCode::NOT_MODIFIED.into_response(), version))
}

/// Whether a version conflict is worth another read-modify-write round:
/// only when the client did not pin a version with `If-Match`.
fn retry_conflict(e: &StoreError, headers: &HeaderMap, attempt: usize) -> bool {
    *e == StoreError::VersionMismatch && if_match(headers).is_none() && attempt + 1 < WRITE_ATTEMPTS
}

// ---------------------------------------------------------------- users

async fn render_users<S: DirectoryStore>(
    shared: &Shared<S>,
    scope: &DirectoryScope,
    users: &[UserRecord],
    projection: &Projection,
) -> Result<Vec<Value>, ScimError> {
    let groups = if projection.wants("groups") && !users.is_empty() {
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        shared.store.groups_of_users(&scope.directory, &ids).await?
    } else {
        HashMap::new()
    };
    Ok(users
        .iter()
        .map(|u| {
            let g = projection.wants("groups").then(|| groups.get(&u.id).map(Vec::as_slice).unwrap_or(&[]));
            let mut v = u.to_scim_json(Some(&scope.base_url), g);
            projection.apply(ResourceKind::User, &mut v);
            v
        })
        .collect())
}

async fn user_response<S: DirectoryStore>(
    shared: &Shared<S>,
    scope: &DirectoryScope,
    user: &UserRecord,
    projection: &Projection,
    status: StatusCode,
) -> Result<Response, ScimError> {
    let body = render_users(shared, scope, std::slice::from_ref(user), projection).await?.pop().unwrap_or(Value::Null);
    let mut res = with_etag(scim_response(status, &body), &user.meta.version);
    if status == StatusCode::CREATED {
        res = with_location(res, &format!("{}/Users/{}", scope.base_url, user.id));
    }
    Ok(res)
}

async fn list_users<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    uri: Uri,
) -> Result<Response, ScimError> {
    let req = ListRequest::from_query(&QueryParams::from_uri(&uri)?)?;
    list_kind(&st.inner, &scope, ResourceKind::User, &req).await
}

async fn list_kind<S: DirectoryStore>(
    shared: &Shared<S>,
    scope: &DirectoryScope,
    kind: ResourceKind,
    req: &ListRequest,
) -> Result<Response, ScimError> {
    let (query, projection) = req.to_query(kind, &shared.config)?;
    let (total, resources) = match kind {
        ResourceKind::User => {
            let page = shared.store.list_users(&scope.directory, &query).await?;
            let items = render_users(shared, scope, &page.items, &projection).await?;
            (page.total_results, items)
        }
        ResourceKind::Group => {
            let page = shared.store.list_groups(&scope.directory, &query).await?;
            (page.total_results, render_groups(scope, &page, &projection))
        }
    };
    Ok(list_response(total, query.start_index, resources))
}

async fn search_users<S: DirectoryStore>(
    st: State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    search_kind(st, scope, headers, body, ResourceKind::User).await
}

async fn search_groups<S: DirectoryStore>(
    st: State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    search_kind(st, scope, headers, body, ResourceKind::Group).await
}

/// `POST /{Users,Groups}/.search`: a list request in a body, answered like a GET list.
async fn search_kind<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    body: Body,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let body = read_json(&headers, body, st.inner.config.max_body_bytes).await?;
    let req = ListRequest::from_search_body(body)?;
    list_kind(&st.inner, &scope, kind, &req).await
}

/// `POST /.search`: users, then groups, paged as one list.
async fn search_all<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let req = ListRequest::from_search_body(body)?;
    let (uq, up) = req.to_query(ResourceKind::User, &shared.config)?;
    let (gq, gp) = req.to_query(ResourceKind::Group, &shared.config)?;
    let users = shared.store.list_users(&scope.directory, &uq).await?;
    let mut resources = render_users(shared, &scope, &users.items, &up).await?;
    let remaining = uq.count.saturating_sub(resources.len());
    let group_start = uq.start_index.saturating_sub(users.total_results).max(1);
    let gq = ListQuery { start_index: group_start, count: remaining, ..gq };
    let groups = shared.store.list_groups(&scope.directory, &gq).await?;
    resources.extend(render_groups(&scope, &groups, &gp));
    Ok(list_response(users.total_results + groups.total_results, uq.start_index, resources))
}

async fn create_user<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::User)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let (data, groups) = resource::user_from_body(body, &shared.config.tolerated_schemas)?;
    let store = &shared.store;
    let dir = &scope.directory;
    let existing = store.find_user_by_user_name(dir, &data.user_name).await?;
    let user = match existing {
        // Okta: a user deactivated and later re-assigned is POSTed again; the
        // retained, deactivated user is revived instead of a 409.
        Some(u) if !u.data.assigned() => {
            tracing::info!(directory = %dir, user = %u.id, "scim post revives a deactivated user");
            store.replace_user(dir, &u.id, Some(&u.meta.version), data, &groups).await.map_err(|e| match e {
                StoreError::VersionMismatch => ScimError::Conflict("the user changed meanwhile; retry".into()),
                e => e.into(),
            })?
        }
        Some(_) => {
            return Err(ScimError::Conflict(format!(
                "userName {:?} is already taken in this directory",
                data.user_name
            )));
        }
        None => store.create_user(dir, data, &groups).await?,
    };
    user_response(shared, &scope, &user, &projection, StatusCode::CREATED).await
}

async fn get_user<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::User)?;
    let user = shared
        .store
        .get_user(&scope.directory, scope.id()?)
        .await?
        .ok_or_else(|| ScimError::NotFound("user not found".into()))?;
    if let Some(res) = not_modified(&headers, &user.meta.version) {
        return Ok(res);
    }
    user_response(shared, &scope, &user, &projection, StatusCode::OK).await
}

async fn replace_user<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::User)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    // Okta echoes id, meta and groups in the PUT body: ignored (read-only);
    // listed groups are only ever joined, never left.
    let (data, groups) = resource::user_from_body(body, &shared.config.tolerated_schemas)?;
    let id = scope.id()?;
    let mut attempt = 0;
    let user = loop {
        let current = shared
            .store
            .get_user(&scope.directory, id)
            .await?
            .ok_or_else(|| ScimError::NotFound("user not found".into()))?;
        check_if_match(&headers, &current.meta.version)?;
        match shared.store.replace_user(&scope.directory, id, Some(&current.meta.version), data.clone(), &groups).await
        {
            Ok(u) => break u,
            Err(e) if retry_conflict(&e, &headers, attempt) => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    user_response(shared, &scope, &user, &projection, StatusCode::OK).await
}

async fn patch_user<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::User)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let ops = patch::parse_patch_request(body)?;
    let id = scope.id()?;
    let mut attempt = 0;
    let user = loop {
        let current = shared
            .store
            .get_user(&scope.directory, id)
            .await?
            .ok_or_else(|| ScimError::NotFound("user not found".into()))?;
        check_if_match(&headers, &current.meta.version)?;
        let mut attrs = current.data.to_attributes();
        patch::apply_operations(ResourceKind::User, id, &mut attrs, ops.clone())?;
        let data = resource::user_from_attributes(attrs)?;
        match shared.store.replace_user(&scope.directory, id, Some(&current.meta.version), data, &[]).await {
            Ok(u) => break u,
            Err(e) if retry_conflict(&e, &headers, attempt) => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    user_response(shared, &scope, &user, &projection, StatusCode::OK).await
}

fn expected_version(headers: &HeaderMap) -> Option<String> {
    let h = if_match(headers)?;
    let first = h.split(',').next()?.trim();
    if first == "*" {
        return None;
    }
    Some(first.strip_prefix("W/").unwrap_or(first).trim_matches('"').to_string())
}

async fn delete_user<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let expected = expected_version(&headers);
    st.inner.store.delete_user(&scope.directory, scope.id()?, expected.as_deref()).await.map_err(|e| match e {
        StoreError::NotFound => ScimError::NotFound("user not found".into()),
        e => e.into(),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- groups

fn render_groups(scope: &DirectoryScope, page: &Page<GroupRecord>, projection: &Projection) -> Vec<Value> {
    page.items.iter().map(|g| render_group(scope, g, projection)).collect()
}

fn render_group(scope: &DirectoryScope, g: &GroupRecord, projection: &Projection) -> Value {
    let mut v = g.to_scim_json(Some(&scope.base_url));
    projection.apply(ResourceKind::Group, &mut v);
    v
}

fn group_response(scope: &DirectoryScope, g: &GroupRecord, projection: &Projection, status: StatusCode) -> Response {
    let mut res = with_etag(scim_response(status, &render_group(scope, g, projection)), &g.meta.version);
    if status == StatusCode::CREATED {
        res = with_location(res, &format!("{}/Groups/{}", scope.base_url, g.id));
    }
    res
}

async fn list_groups<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    uri: Uri,
) -> Result<Response, ScimError> {
    let req = ListRequest::from_query(&QueryParams::from_uri(&uri)?)?;
    list_kind(&st.inner, &scope, ResourceKind::Group, &req).await
}

async fn create_group<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::Group)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let (data, members) = resource::group_from_body(body, &shared.config.tolerated_schemas)?;
    let group = shared.store.create_group(&scope.directory, data, dedupe(members.unwrap_or_default())).await?;
    Ok(group_response(&scope, &group, &projection, StatusCode::CREATED))
}

fn dedupe(members: Vec<NewMember>) -> Vec<NewMember> {
    let mut seen = BTreeSet::new();
    members.into_iter().filter(|m| seen.insert(m.value.clone())).collect()
}

async fn get_group<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ScimError> {
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::Group)?;
    let group = st
        .inner
        .store
        .get_group(&scope.directory, scope.id()?, projection.wants("members"))
        .await?
        .ok_or_else(|| ScimError::NotFound("group not found".into()))?;
    if let Some(res) = not_modified(&headers, &group.meta.version) {
        return Ok(res);
    }
    Ok(group_response(&scope, &group, &projection, StatusCode::OK))
}

async fn replace_group<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let projection = QueryParams::from_uri(&uri)?.projection(ResourceKind::Group)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let (data, members) = resource::group_from_body(body, &shared.config.tolerated_schemas)?;
    let id = scope.id()?;
    // Members absent from the body are left as they are (RFC 7644 §3.5.1
    // lets the provider choose; clearing a big group because a client left
    // the attribute out is the worse failure).
    let update = GroupUpdate {
        data: Some(data),
        members: MembershipChange { replace_all: members.map(dedupe), ..Default::default() },
    };
    let expected = expected_version(&headers);
    shared.store.update_group(&scope.directory, id, expected.as_deref(), update).await.map_err(|e| match e {
        StoreError::NotFound => ScimError::NotFound("group not found".into()),
        e => e.into(),
    })?;
    let group = shared
        .store
        .get_group(&scope.directory, id, projection.wants("members"))
        .await?
        .ok_or_else(|| ScimError::NotFound("group not found".into()))?;
    Ok(group_response(&scope, &group, &projection, StatusCode::OK))
}

async fn patch_group<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ScimError> {
    let shared = &st.inner;
    let query = QueryParams::from_uri(&uri)?;
    let wants_body = query.get("attributes").is_some() || query.get("excludedAttributes").is_some();
    let projection = query.projection(ResourceKind::Group)?;
    let body = read_json(&headers, body, shared.config.max_body_bytes).await?;
    let ops = patch::parse_patch_request(body)?;
    let plan = patch::plan_group_patch(ops)?;
    let id = scope.id()?;
    let dir = &scope.directory;
    let mut attempt = 0;
    let updated = loop {
        let result = match &plan.members {
            // Fast path: membership as a delta, members never read.
            Some(delta) => {
                let (data, expected) = if plan.attribute_ops.is_empty() {
                    (None, expected_version(&headers))
                } else {
                    let current = shared
                        .store
                        .get_group(dir, id, false)
                        .await?
                        .ok_or_else(|| ScimError::NotFound("group not found".into()))?;
                    check_if_match(&headers, &current.meta.version)?;
                    let mut attrs = current.data.to_attributes();
                    patch::apply_operations(ResourceKind::Group, id, &mut attrs, plan.attribute_ops.clone())?;
                    (Some(resource::group_from_attributes(attrs)?), Some(current.meta.version))
                };
                let update = GroupUpdate { data, members: delta.clone() };
                shared.store.update_group(dir, id, expected.as_deref(), update).await
            }
            // Fallback: member filters that need the member list.
            None => {
                let current = shared
                    .store
                    .get_group(dir, id, true)
                    .await?
                    .ok_or_else(|| ScimError::NotFound("group not found".into()))?;
                check_if_match(&headers, &current.meta.version)?;
                let update = full_group_patch(id, &current, &plan)?;
                shared.store.update_group(dir, id, Some(&current.meta.version), update).await
            }
        };
        match result {
            Ok(g) => break g,
            Err(e) if retry_conflict(&e, &headers, attempt) => attempt += 1,
            Err(StoreError::NotFound) => return Err(ScimError::NotFound("group not found".into())),
            Err(e) => return Err(e.into()),
        }
    };
    if wants_body {
        let group = shared
            .store
            .get_group(dir, id, projection.wants("members"))
            .await?
            .ok_or_else(|| ScimError::NotFound("group not found".into()))?;
        return Ok(group_response(&scope, &group, &projection, StatusCode::OK));
    }
    // Okta and Entra both accept 204 for group PATCH; answering with the
    // members of a big group would cost what the delta saved.
    Ok(with_etag(StatusCode::NO_CONTENT.into_response(), &updated.meta.version))
}

/// Applies a group PATCH on the full representation (members included) and
/// expresses the result as an update with a membership delta.
fn full_group_patch(id: &str, current: &GroupRecord, plan: &patch::GroupPatchPlan) -> Result<GroupUpdate, ScimError> {
    let old: Vec<NewMember> = current
        .members
        .iter()
        .flatten()
        .map(|m| NewMember { value: m.value.clone(), display: m.display.clone() })
        .collect();
    let mut attrs = current.data.to_attributes();
    if !old.is_empty() {
        attrs.insert(
            "members".into(),
            Value::Array(
                old.iter()
                    .map(|m| {
                        let mut o = Map::new();
                        o.insert("value".into(), m.value.clone().into());
                        if let Some(d) = &m.display {
                            o.insert("display".into(), d.clone().into());
                        }
                        Value::Object(o)
                    })
                    .collect(),
            ),
        );
    }
    let ops: Vec<PatchOperation> = plan.attribute_ops.iter().chain(plan.member_ops.iter()).cloned().collect();
    patch::apply_operations(ResourceKind::Group, id, &mut attrs, ops)?;
    let new = match attrs.remove("members") {
        Some(v) => resource::member_ids(v, "members")?,
        None => Vec::new(),
    };
    let old_ids: BTreeSet<&str> = old.iter().map(|m| m.value.as_str()).collect();
    let new_ids: BTreeSet<&str> = new.iter().map(|m| m.value.as_str()).collect();
    let remove = old_ids.difference(&new_ids).map(|s| s.to_string()).collect();
    let add = dedupe(new.iter().filter(|m| !old_ids.contains(m.value.as_str())).cloned().collect());
    Ok(GroupUpdate {
        data: Some(resource::group_from_attributes(attrs)?),
        members: MembershipChange { add, remove, replace_all: None },
    })
}

async fn delete_group<S: DirectoryStore>(
    State(st): State<ScimState<S>>,
    scope: DirectoryScope,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let expected = expected_version(&headers);
    st.inner.store.delete_group(&scope.directory, scope.id()?, expected.as_deref()).await.map_err(|e| match e {
        StoreError::NotFound => ScimError::NotFound("group not found".into()),
        e => e.into(),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- discovery

async fn service_provider_config<S: DirectoryStore>(State(st): State<ScimState<S>>, scope: DirectoryScope) -> Response {
    let c = &st.inner.config;
    scim_response(
        StatusCode::OK,
        &json!({
            "schemas": [schema::SERVICE_PROVIDER_CONFIG_URN],
            "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": c.max_results},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token issued for one directory",
                "primary": true
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{}/ServiceProviderConfig", scope.base_url),
            }
        }),
    )
}

async fn resource_types(scope: DirectoryScope) -> Response {
    let docs: Vec<Value> =
        [ResourceKind::User, ResourceKind::Group].iter().map(|k| k.resource_type_document(&scope.base_url)).collect();
    list_response(docs.len(), 1, docs)
}

async fn resource_type(scope: DirectoryScope) -> Result<Response, ScimError> {
    let id = scope.id()?;
    [ResourceKind::User, ResourceKind::Group]
        .iter()
        .find(|k| k.name().eq_ignore_ascii_case(id))
        .map(|k| scim_response(StatusCode::OK, &k.resource_type_document(&scope.base_url)))
        .ok_or_else(|| ScimError::NotFound(format!("no resource type {id:?}")))
}

async fn schemas(scope: DirectoryScope) -> Response {
    let docs = schema::all_schema_documents(&scope.base_url);
    list_response(docs.len(), 1, docs)
}

async fn schema_by_id(scope: DirectoryScope) -> Result<Response, ScimError> {
    let id = scope.id()?;
    schema::all_schema_documents(&scope.base_url)
        .into_iter()
        .find(|d| d["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(id)))
        .map(|d| scim_response(StatusCode::OK, &d))
        .ok_or_else(|| ScimError::NotFound(format!("no schema {id:?}")))
}
