//! Resources on the wire: turning request bodies into validated
//! [`UserData`]/[`GroupData`] (canonical attribute names, coerced types,
//! read-only attributes ignored), rendering records back to SCIM JSON, and
//! the `attributes`/`excludedAttributes` projection.

use serde_json::{Map, Value, json};

use crate::error::ScimError;
use crate::filter::{AttrPath, get_ci};
use crate::schema::{self, AttrType, AttributeDef, ResourceKind};
use crate::store::{GroupData, GroupRecord, GroupRef, Meta, NewMember, UserData, UserRecord};

/// The weak ETag of a version: `W/"<version>"`.
pub fn etag(version: &str) -> String {
    format!("W/\"{version}\"")
}

/// Does an `If-Match`/`If-None-Match` header value name this version?
/// Accepts `*`, weak and strong forms, and comma-separated lists.
pub fn etag_matches(header: &str, version: &str) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*" || {
            let t = t.strip_prefix("W/").unwrap_or(t);
            t.trim_matches('"') == version
        }
    })
}

/// Checks the `schemas` of a request body: each URN must be the resource's
/// core schema, one of its extensions, or a tolerated URN.
fn check_schemas(body: &Map<String, Value>, kind: ResourceKind, tolerated: &[String]) -> Result<(), ScimError> {
    let Some(schemas) = get_ci(body, "schemas") else {
        // Tolerated: some clients omit it on PUT; the endpoint says the type.
        return Ok(());
    };
    let Value::Array(list) = schemas else {
        return Err(ScimError::invalid_syntax("schemas must be an array of URNs"));
    };
    for s in list {
        let Value::String(urn) = s else {
            return Err(ScimError::invalid_syntax("schemas must be an array of URNs"));
        };
        let known = urn.eq_ignore_ascii_case(kind.core_urn())
            || kind.extension(urn).is_some()
            || tolerated.iter().any(|t| t.eq_ignore_ascii_case(urn));
        if !known {
            return Err(ScimError::invalid_value(format!("unknown schema {urn:?} for a {} resource", kind.name())));
        }
    }
    Ok(())
}

/// Normalizes one attribute value against its definition: canonical
/// sub-attribute names, coerced scalars, a lone value for a multi-valued
/// attribute wrapped in an array. `None` means unassigned (null or empty).
pub(crate) fn normalize_value(def: &AttributeDef, value: Value) -> Result<Option<Value>, String> {
    if value.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(def, item)? {
                out.push(v);
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    if value.is_array() {
        return Err(format!("{} is single-valued, got an array", def.name));
    }
    normalize_single(def, value)
}

fn normalize_single(def: &AttributeDef, value: Value) -> Result<Option<Value>, String> {
    if def.ty != AttrType::Complex {
        let v = schema::coerce_scalar(def, value)?;
        return Ok((!v.is_null()).then_some(v));
    }
    let Value::Object(obj) = value else {
        return Err(format!("{} must be an object, got {}", def.name, schema::json_type_name(&value)));
    };
    let mut out = Map::new();
    for (k, v) in obj {
        let Some(sub) = def.sub(&k) else {
            tracing::debug!(attribute = def.name, sub = %k, "unknown sub-attribute ignored");
            continue;
        };
        if v.is_null() {
            continue;
        }
        if v.is_array() || v.is_object() {
            return Err(format!("{}.{} must be a single value", def.name, sub.name));
        }
        let v = schema::coerce_scalar(sub, v).map_err(|e| format!("{}.{e}", def.name))?;
        out.insert(sub.name.to_string(), v);
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Normalizes the attributes of an extension object.
fn normalize_extension(urn: &str, attrs: &'static [AttributeDef], value: Value) -> Result<Option<Value>, ScimError> {
    let Value::Object(obj) = value else {
        return Err(ScimError::invalid_syntax(format!("{urn} must be an object")));
    };
    let mut out = Map::new();
    for (k, v) in obj {
        let Some(def) = attrs.iter().find(|a| a.name.eq_ignore_ascii_case(&k)) else {
            tracing::debug!(schema = urn, attribute = %k, "unknown extension attribute ignored");
            continue;
        };
        if let Some(v) = normalize_value(def, v).map_err(ScimError::invalid_value)? {
            out.insert(def.name.to_string(), v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// The attributes of a resource body, normalized, with the read-only ones
/// (`id`, `meta`, `schemas`) and write-only ones (`password`) dropped, and the
/// user's `groups` returned separately.
struct Normalized {
    attributes: Map<String, Value>,
    groups: Vec<String>,
    members: Option<Vec<NewMember>>,
}

fn normalize_body(body: Value, kind: ResourceKind, tolerated: &[String]) -> Result<Normalized, ScimError> {
    let Value::Object(body) = body else {
        return Err(ScimError::invalid_syntax(format!("a {} must be a JSON object", kind.name())));
    };
    check_schemas(&body, kind, tolerated)?;
    let mut out = Normalized { attributes: Map::new(), groups: Vec::new(), members: None };
    for (key, value) in body {
        if let Some((urn, attrs)) = kind.extension(&key) {
            if let Some(v) = normalize_extension(urn, attrs, value)? {
                out.attributes.insert(urn.to_string(), v);
            }
            continue;
        }
        if tolerated.iter().any(|t| t.eq_ignore_ascii_case(&key)) {
            continue;
        }
        let Some(def) = kind.core_attribute(&key) else {
            tracing::debug!(resource = kind.name(), attribute = %key, "unknown attribute ignored");
            continue;
        };
        match def.name {
            // Read-only: ignored on POST and PUT (RFC 7644 §3.5.1). Okta's
            // PUT echoes id, meta and groups.
            "id" | "meta" => continue,
            // Write-only; Muster never authenticates with it.
            "password" => continue,
            "groups" if kind == ResourceKind::User => {
                out.groups = member_ids(value, "groups")?.into_iter().map(|m| m.value).collect();
                continue;
            }
            "members" if kind == ResourceKind::Group => {
                out.members = Some(member_ids(value, "members")?);
                continue;
            }
            _ => {}
        }
        if let Some(v) = normalize_value(def, value).map_err(ScimError::invalid_value)? {
            out.attributes.insert(def.name.to_string(), v);
        }
    }
    Ok(out)
}

/// Reads `[{"value": "id", "display": "..."}, ...]`, moving strings out of
/// the parsed body (no copy of a big member list).
pub(crate) fn member_ids(value: Value, attr: &str) -> Result<Vec<NewMember>, ScimError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        single @ Value::Object(_) => vec![single],
        other => {
            return Err(ScimError::invalid_value(format!(
                "{attr} must be an array of objects, got {}",
                schema::json_type_name(&other)
            )));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(mut obj) = item else {
            return Err(ScimError::invalid_value(format!("each of {attr} must be an object with a value")));
        };
        let key = obj.keys().find(|k| k.eq_ignore_ascii_case("value")).cloned();
        let value = match key.and_then(|k| obj.remove(&k)) {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => {
                return Err(ScimError::invalid_value(format!("each of {attr} needs a string value (the id)")));
            }
        };
        let display = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("display"))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string);
        out.push(NewMember { value, display });
    }
    Ok(out)
}

fn take_string(attrs: &mut Map<String, Value>, key: &str) -> Option<String> {
    match attrs.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A validated user from a POST or PUT body, and the group ids it lists.
pub fn user_from_body(body: Value, tolerated: &[String]) -> Result<(UserData, Vec<String>), ScimError> {
    let n = normalize_body(body, ResourceKind::User, tolerated)?;
    Ok((user_from_attributes(n.attributes)?, n.groups))
}

/// A validated user from normalized attributes (also after a PATCH).
pub fn user_from_attributes(mut attrs: Map<String, Value>) -> Result<UserData, ScimError> {
    let user_name = take_string(&mut attrs, "userName")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?;
    let external_id = take_string(&mut attrs, "externalId");
    let active = match attrs.remove("active") {
        Some(Value::Bool(b)) => Some(b),
        _ => None,
    };
    for k in ["id", "meta", "schemas", "groups", "password"] {
        attrs.remove(k);
    }
    Ok(UserData { user_name, external_id, active, attributes: attrs })
}

/// A validated group from a POST or PUT body, and its members when the body
/// has `members`.
pub fn group_from_body(body: Value, tolerated: &[String]) -> Result<(GroupData, Option<Vec<NewMember>>), ScimError> {
    let n = normalize_body(body, ResourceKind::Group, tolerated)?;
    Ok((group_from_attributes(n.attributes)?, n.members))
}

/// A validated group from normalized attributes.
pub fn group_from_attributes(mut attrs: Map<String, Value>) -> Result<GroupData, ScimError> {
    let display_name = take_string(&mut attrs, "displayName")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?;
    let external_id = take_string(&mut attrs, "externalId");
    for k in ["id", "meta", "schemas", "members"] {
        attrs.remove(k);
    }
    Ok(GroupData { display_name, external_id, attributes: attrs })
}

fn meta_json(meta: &Meta, kind: ResourceKind, location: Option<String>) -> Value {
    let mut m = json!({
        "resourceType": kind.name(),
        "created": meta.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "version": etag(&meta.version),
    });
    if let (Some(loc), Some(o)) = (location, m.as_object_mut()) {
        o.insert("location".into(), loc.into());
    }
    m
}

impl UserData {
    /// Whether the IdP assigns the user: an absent `active` means assigned (RFC 7643
    /// gives `active` no default; an IdP that sends none has not unassigned anyone).
    pub fn assigned(&self) -> bool {
        self.active != Some(false)
    }

    /// The attributes as SCIM JSON (no id, meta or schemas).
    pub fn to_attributes(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("userName".into(), self.user_name.clone().into());
        if let Some(e) = &self.external_id {
            o.insert("externalId".into(), e.clone().into());
        }
        if let Some(active) = self.active {
            o.insert("active".into(), active.into());
        }
        for (k, v) in &self.attributes {
            o.insert(k.clone(), v.clone());
        }
        o
    }
}

impl UserRecord {
    /// The SCIM representation. `base_url` (the directory's SCIM base) gives
    /// `meta.location`; `groups` fills the read-only `groups` attribute.
    pub fn to_scim_json(&self, base_url: Option<&str>, groups: Option<&[GroupRef]>) -> Value {
        let mut o = Map::new();
        let mut schemas = vec![Value::from(schema::USER_URN)];
        if self.data.attributes.contains_key(schema::ENTERPRISE_USER_URN) {
            schemas.push(schema::ENTERPRISE_USER_URN.into());
        }
        o.insert("schemas".into(), Value::Array(schemas));
        o.insert("id".into(), self.id.clone().into());
        o.extend(self.data.to_attributes());
        if let Some(groups) = groups {
            let list = groups
                .iter()
                .map(|g| {
                    let mut e = json!({"value": g.id, "display": g.display_name, "type": "direct"});
                    if let (Some(base), Some(o)) = (base_url, e.as_object_mut()) {
                        o.insert("$ref".into(), format!("{base}/Groups/{}", g.id).into());
                    }
                    e
                })
                .collect();
            o.insert("groups".into(), Value::Array(list));
        }
        let location = base_url.map(|b| format!("{b}/Users/{}", self.id));
        o.insert("meta".into(), meta_json(&self.meta, ResourceKind::User, location));
        Value::Object(o)
    }
}

impl GroupData {
    /// The attributes as SCIM JSON (no id, meta, schemas or members).
    pub fn to_attributes(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("displayName".into(), self.display_name.clone().into());
        if let Some(e) = &self.external_id {
            o.insert("externalId".into(), e.clone().into());
        }
        for (k, v) in &self.attributes {
            o.insert(k.clone(), v.clone());
        }
        o
    }
}

impl GroupRecord {
    /// The SCIM representation; `members` appear only when loaded.
    pub fn to_scim_json(&self, base_url: Option<&str>) -> Value {
        let mut o = Map::new();
        o.insert("schemas".into(), json!([schema::GROUP_URN]));
        o.insert("id".into(), self.id.clone().into());
        o.extend(self.data.to_attributes());
        if let Some(members) = &self.members {
            let list = members
                .iter()
                .map(|m| {
                    let mut e = Map::new();
                    e.insert("value".into(), m.value.clone().into());
                    if let Some(d) = &m.display {
                        e.insert("display".into(), d.clone().into());
                    }
                    e.insert("type".into(), m.kind.as_str().into());
                    if let Some(base) = base_url {
                        let ep = match m.kind {
                            crate::store::MemberKind::User => "Users",
                            crate::store::MemberKind::Group => "Groups",
                        };
                        e.insert("$ref".into(), format!("{base}/{ep}/{}", m.value).into());
                    }
                    Value::Object(e)
                })
                .collect();
            o.insert("members".into(), Value::Array(list));
        }
        let location = base_url.map(|b| format!("{b}/Groups/{}", self.id));
        o.insert("meta".into(), meta_json(&self.meta, ResourceKind::Group, location));
        Value::Object(o)
    }
}

/// One entry of `attributes`/`excludedAttributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// A whole extension schema.
    Extension(&'static str),
    /// An attribute (in the core schema when `ext` is `None`), optionally
    /// one sub-attribute.
    Attr { ext: Option<&'static str>, name: String, sub: Option<String> },
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

impl Projection {
    /// Parses the two comma-separated lists. Unknown names are kept (they
    /// select nothing); malformed ones are `invalidValue`.
    pub fn parse(
        kind: ResourceKind,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Projection, ScimError> {
        Ok(Projection {
            include: parse_selectors(kind, attributes.unwrap_or(""))?,
            exclude: parse_selectors(kind, excluded.unwrap_or(""))?,
        })
    }

    /// From already-split lists (a `.search` body).
    pub fn from_lists(kind: ResourceKind, attributes: &[String], excluded: &[String]) -> Result<Projection, ScimError> {
        Projection::parse(kind, Some(&attributes.join(",")), Some(&excluded.join(",")))
    }

    /// Is nothing asked for?
    pub fn is_default(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Will the core attribute `name` be returned (used to skip reading
    /// members or groups)?
    pub fn wants(&self, name: &str) -> bool {
        let hit = |s: &Selector| matches!(s, Selector::Attr { ext: None, name: n, .. } if n.eq_ignore_ascii_case(name));
        if !self.include.is_empty() {
            return self.include.iter().any(hit);
        }
        !self.exclude.iter().any(|s| hit(s) && matches!(s, Selector::Attr { sub: None, .. }))
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, kind: ResourceKind, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else {
            return;
        };
        if !self.include.is_empty() {
            let mut kept = Map::new();
            for key in ["schemas", "id"] {
                if let Some(v) = obj.remove(key) {
                    kept.insert(key.into(), v);
                }
            }
            for sel in &self.include {
                match sel {
                    Selector::Extension(urn) => {
                        if let Some(v) = obj.get(*urn) {
                            kept.insert((*urn).to_string(), v.clone());
                        }
                    }
                    Selector::Attr { ext, name, sub } => {
                        let (src, dst) = match ext {
                            None => (Some(&*obj), &mut kept),
                            Some(urn) => {
                                let src = obj.get(*urn).and_then(Value::as_object);
                                let dst = kept.entry((*urn).to_string()).or_insert_with(|| Value::Object(Map::new()));
                                match dst.as_object_mut() {
                                    Some(d) => (src, d),
                                    None => continue,
                                }
                            }
                        };
                        let Some(src) = src else { continue };
                        copy_selected(src, dst, name, sub.as_deref());
                    }
                }
            }
            kept.retain(|_, v| !matches!(v, Value::Object(o) if o.is_empty()));
            *obj = kept;
        }
        for sel in &self.exclude {
            match sel {
                Selector::Extension(urn) => {
                    obj.remove(*urn);
                }
                Selector::Attr { ext, name, sub } => {
                    if ext.is_none() && sub.is_none() && (name == "id" || name == "schemas") {
                        continue; // returned always
                    }
                    let target = match ext {
                        None => Some(&mut *obj),
                        Some(urn) => obj.get_mut(*urn).and_then(Value::as_object_mut),
                    };
                    if let Some(t) = target {
                        remove_selected(t, name, sub.as_deref());
                    }
                }
            }
        }
        let _ = kind;
    }
}

fn copy_selected(src: &Map<String, Value>, dst: &mut Map<String, Value>, name: &str, sub: Option<&str>) {
    let Some(v) = src.get(name) else { return };
    match sub {
        None => {
            dst.insert(name.to_string(), v.clone());
        }
        Some(sub) => {
            let pick = |o: &Map<String, Value>| -> Map<String, Value> {
                o.iter().filter(|(k, _)| k.as_str() == sub).map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let new = match v {
                Value::Object(o) => {
                    let mut merged = dst.get(name).and_then(Value::as_object).cloned().unwrap_or_default();
                    merged.extend(pick(o));
                    Value::Object(merged)
                }
                Value::Array(items) => {
                    let existing = dst.get(name).and_then(Value::as_array);
                    Value::Array(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| {
                                let mut m = existing
                                    .and_then(|e| e.get(i))
                                    .and_then(Value::as_object)
                                    .cloned()
                                    .unwrap_or_default();
                                if let Some(o) = item.as_object() {
                                    m.extend(pick(o));
                                }
                                Value::Object(m)
                            })
                            .collect(),
                    )
                }
                _ => return,
            };
            dst.insert(name.to_string(), new);
        }
    }
}

fn remove_selected(obj: &mut Map<String, Value>, name: &str, sub: Option<&str>) {
    match sub {
        None => {
            obj.remove(name);
        }
        Some(sub) => match obj.get_mut(name) {
            Some(Value::Object(o)) => {
                o.remove(sub);
            }
            Some(Value::Array(items)) => {
                for i in items {
                    if let Some(o) = i.as_object_mut() {
                        o.remove(sub);
                    }
                }
            }
            _ => {}
        },
    }
}

fn parse_selectors(kind: ResourceKind, list: &str) -> Result<Vec<Selector>, ScimError> {
    let mut out = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((urn, _)) = kind.extension(raw) {
            out.push(Selector::Extension(urn));
            continue;
        }
        let path = AttrPath::parse(raw).map_err(ScimError::invalid_value)?;
        let (ext, attrs): (Option<&'static str>, &'static [AttributeDef]) = match &path.urn {
            None => (None, &[]),
            Some(u) if u.eq_ignore_ascii_case(kind.core_urn()) => (None, &[]),
            Some(u) => match kind.extension(u) {
                Some((urn, attrs)) => (Some(urn), attrs),
                None => continue, // selects nothing
            },
        };
        // Canonical names, so the projection matches the stored keys.
        let def = match ext {
            None => kind.core_attribute(&path.name),
            Some(_) => attrs.iter().find(|a| a.name.eq_ignore_ascii_case(&path.name)),
        };
        let name = def.map(|d| d.name.to_string()).unwrap_or(path.name.clone());
        let sub = path
            .sub
            .as_ref()
            .map(|s| def.and_then(|d| d.sub(s)).map(|d| d.name.to_string()).unwrap_or_else(|| s.clone()));
        out.push(Selector::Attr { ext, name, sub });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerated() -> Vec<String> {
        vec![schema::ENTRA_ADSCIM_GROUP_URN.to_string()]
    }

    #[test]
    fn user_body_is_normalized() {
        let (u, groups) = user_from_body(
            json!({
                "schemas": [schema::USER_URN, schema::ENTERPRISE_USER_URN],
                "USERNAME": "a@b.c",
                "id": "ignored",
                "password": "secret",
                "active": "False",
                "name": {"GIVENNAME": "A", "unknownSub": 1},
                "emails": {"value": "a@b.c", "type": "work", "primary": "true"},
                "groups": [{"value": "g1"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"EmployeeNumber": "7"},
                "customThing": 5
            }),
            &tolerated(),
        )
        .unwrap();
        assert_eq!(u.user_name, "a@b.c");
        assert_eq!(u.active, Some(false));
        assert_eq!(u.attributes["name"], json!({"givenName": "A"}));
        assert_eq!(u.attributes["emails"], json!([{"value": "a@b.c", "type": "work", "primary": true}]));
        assert_eq!(u.attributes[schema::ENTERPRISE_USER_URN], json!({"employeeNumber": "7"}));
        assert!(!u.attributes.contains_key("password"));
        assert!(!u.attributes.contains_key("customThing"));
        assert_eq!(groups, vec!["g1".to_string()]);
    }

    #[test]
    fn bad_user_bodies_are_400() {
        for body in [
            json!([]),
            json!({"schemas": ["urn:example:unknown"], "userName": "x"}),
            json!({"schemas": [schema::GROUP_URN], "userName": "x"}),
            json!({"userName": 5}),
            json!({"displayName": "no user name"}),
            json!({"userName": "x", "active": "maybe"}),
            json!({"userName": "x", "name": "not an object"}),
            json!({"userName": "x", "emails": [{"value": {"nested": 1}}]}),
        ] {
            let e = user_from_body(body.clone(), &tolerated()).unwrap_err();
            assert_eq!(e.status_and_type().0, 400, "{body}");
        }
    }

    #[test]
    fn entra_group_schema_is_tolerated() {
        let (g, members) = group_from_body(
            json!({
                "schemas": [schema::GROUP_URN, schema::ENTRA_ADSCIM_GROUP_URN],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "displayName",
                "meta": {"resourceType": "Group"}
            }),
            &tolerated(),
        )
        .unwrap();
        assert_eq!(g.display_name, "displayName");
        assert!(members.is_none());
    }

    #[test]
    fn projection_includes_and_excludes() {
        let mut v = json!({
            "schemas": [schema::USER_URN], "id": "1", "userName": "u",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "x", "type": "work"}],
            schema::ENTERPRISE_USER_URN: {"employeeNumber": "7", "department": "d"},
            "meta": {"version": "W/\"1\""}
        });
        let p = Projection::parse(
            ResourceKind::User,
            Some("USERNAME,name.givenName,emails.value,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"),
            None,
        )
        .unwrap();
        p.apply(ResourceKind::User, &mut v);
        assert_eq!(
            v,
            json!({
                "schemas": [schema::USER_URN], "id": "1", "userName": "u",
                "name": {"givenName": "A"},
                "emails": [{"value": "x"}],
                schema::ENTERPRISE_USER_URN: {"employeeNumber": "7"}
            })
        );
        let p = Projection::parse(ResourceKind::Group, None, Some("members")).unwrap();
        assert!(!p.wants("members"));
        assert!(p.wants("displayName"));
        let p = Projection::parse(ResourceKind::Group, Some("displayName"), None).unwrap();
        assert!(!p.wants("members"));
    }

    #[test]
    fn etags() {
        assert!(etag_matches("W/\"3\"", "3"));
        assert!(etag_matches("\"3\"", "3"));
        assert!(etag_matches("*", "3"));
        assert!(etag_matches("W/\"1\", W/\"3\"", "3"));
        assert!(!etag_matches("W/\"4\"", "3"));
    }
}
