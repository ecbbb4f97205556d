//! PATCH (RFC 7644 §3.5.2): parsing `PatchOp` requests, applying `add`,
//! `replace` and `remove` to a resource's attributes (paths with value
//! filters such as `emails[type eq "work"].value` included), and turning the
//! operations on a group's `members` into a [`MembershipChange`] delta so a
//! membership PATCH never reads the whole group.
//!
//! Dialect tolerance (sources in `docs/scim.md`):
//! - `op` in any case (`Add`, `Replace`, `Remove`: Microsoft Entra);
//! - booleans as strings (`"False"`: Entra), coerced by the schema;
//! - path-less `add`/`replace` whose value keys are paths: dotted
//!   (`"name.givenName"`) or URN-qualified
//!   (`"urn:...:enterprise:2.0:User:employeeNumber"`) (Entra);
//! - path-less values echoing `id` (Okta's group rename) are accepted when the
//!   id is unchanged;
//! - `remove` with `path: "members"` and a value list removes only those
//!   members (Entra without `aadOptscim062020`), and generally `remove` of a
//!   multi-valued attribute with a value removes only the matching values;
//! - `add`/`replace` with a value filter that matches nothing creates the
//!   element when the filter is made of `eq` terms (Entra sends `Replace` on
//!   `emails[type eq "work"].value` for users that have no work email yet).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{AttrPath, ScimFilter, get_ci, valid_attr_name};
use crate::resource::{member_ids, normalize_value};
use crate::schema::{self, AttrType, AttributeDef, Mutability, ResourceKind};
use crate::store::{MembershipChange, NewMember};

/// Most operations accepted in one PATCH request.
pub const MAX_OPERATIONS: usize = 10_000;

/// `add`, `replace` or `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    /// `add`
    Add,
    /// `replace`
    Replace,
    /// `remove`
    Remove,
}

/// A PATCH path: `attrPath`, or `attrPath[valFilter][.subAttr]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with its sub-attribute when there is no filter).
    pub attr: AttrPath,
    /// The value filter, if any.
    pub filter: Option<ScimFilter>,
    /// The sub-attribute after the filter (`emails[...].value`).
    pub filter_sub: Option<String>,
}

impl PatchPath {
    /// Parses a path; errors are `invalidPath`.
    pub fn parse(s: &str) -> Result<PatchPath, ScimError> {
        let s = s.trim();
        let Some(open) = s.find('[') else {
            let attr = AttrPath::parse(s).map_err(ScimError::invalid_path)?;
            return Ok(PatchPath { attr, filter: None, filter_sub: None });
        };
        let attr = AttrPath::parse(&s[..open]).map_err(ScimError::invalid_path)?;
        if attr.sub.is_some() {
            return Err(ScimError::invalid_path(format!("{attr} cannot take a value filter")));
        }
        // The closing bracket outside any quoted string.
        let mut close = None;
        let mut in_str = false;
        let mut escaped = false;
        for (i, c) in s.char_indices().skip_while(|(i, _)| *i <= open) {
            match (in_str, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_str = false,
                (false, _, '"') => in_str = true,
                (false, _, ']') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| ScimError::invalid_path(format!("missing ']' in {s:?}")))?;
        let filter = ScimFilter::parse_value_filter(&s[open + 1..close])
            .map_err(|e| ScimError::invalid_path(format!("invalid value filter in {s:?}: {e}")))?;
        let rest = &s[close + 1..];
        let filter_sub = if rest.is_empty() {
            None
        } else {
            let sub = rest
                .strip_prefix('.')
                .ok_or_else(|| ScimError::invalid_path(format!("unexpected {rest:?} after ']' in {s:?}")))?;
            if !valid_attr_name(sub) {
                return Err(ScimError::invalid_path(format!("invalid sub-attribute {sub:?}")));
            }
            Some(sub.to_string())
        };
        Ok(PatchPath { attr, filter: Some(filter), filter_sub })
    }
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// What to do.
    pub op: PatchOpKind,
    /// Where; `None` means the resource itself.
    pub path: Option<PatchPath>,
    /// The value (`add` and `replace`; optional for `remove`).
    pub value: Option<Value>,
}

/// Parses a `PatchOp` request body.
pub fn parse_patch_request(body: Value) -> Result<Vec<PatchOperation>, ScimError> {
    let Value::Object(mut body) = body else {
        return Err(ScimError::invalid_syntax("a PatchOp request must be a JSON object"));
    };
    if let Some(schemas) = get_ci(&body, "schemas") {
        let ok = schemas.as_array().is_some_and(|l| {
            l.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(schema::PATCH_OP_URN)))
        });
        if !ok {
            return Err(ScimError::invalid_value(format!("schemas must list {}", schema::PATCH_OP_URN)));
        }
    }
    let key = body
        .keys()
        .find(|k| k.eq_ignore_ascii_case("Operations"))
        .cloned()
        .ok_or_else(|| ScimError::invalid_syntax("Operations is required"))?;
    let Some(Value::Array(ops)) = body.remove(&key) else {
        return Err(ScimError::invalid_syntax("Operations must be an array"));
    };
    if ops.is_empty() {
        return Err(ScimError::invalid_value("Operations must not be empty"));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::bad(
            crate::error::ScimType::TooMany,
            format!("more than {MAX_OPERATIONS} operations in one request"),
        ));
    }
    ops.into_iter().map(parse_operation).collect()
}

fn parse_operation(op: Value) -> Result<PatchOperation, ScimError> {
    let Value::Object(obj) = op else {
        return Err(ScimError::invalid_syntax("each operation must be an object"));
    };
    let mut kind = None;
    let mut path = None;
    let mut value = None;
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("op") {
            let Value::String(s) = v else {
                return Err(ScimError::invalid_syntax("op must be a string"));
            };
            kind = Some(match s.to_ascii_lowercase().as_str() {
                "add" => PatchOpKind::Add,
                "replace" => PatchOpKind::Replace,
                "remove" => PatchOpKind::Remove,
                _ => return Err(ScimError::invalid_syntax(format!("unknown op {s:?}"))),
            });
        } else if k.eq_ignore_ascii_case("path") {
            match v {
                Value::String(s) if s.trim().is_empty() => {}
                Value::String(s) => path = Some(PatchPath::parse(&s)?),
                Value::Null => {}
                _ => return Err(ScimError::invalid_path("path must be a string")),
            }
        } else if k.eq_ignore_ascii_case("value") {
            value = Some(v);
        }
    }
    let op = kind.ok_or_else(|| ScimError::invalid_syntax("each operation needs an op"))?;
    match op {
        PatchOpKind::Add | PatchOpKind::Replace => {
            if value.is_none() {
                return Err(ScimError::invalid_syntax("add and replace need a value"));
            }
            if path.is_none() && !matches!(value, Some(Value::Object(_))) {
                return Err(ScimError::invalid_syntax("without a path, the value must be an object of attributes"));
            }
        }
        PatchOpKind::Remove => {
            if path.is_none() {
                return Err(ScimError::no_target("remove needs a path"));
            }
        }
    }
    Ok(PatchOperation { op, path, value })
}

/// Where an attribute lives: core (`None`) or an extension object.
struct Target {
    ext: Option<&'static str>,
    def: &'static AttributeDef,
}

fn resolve(kind: ResourceKind, attr: &AttrPath) -> Result<Target, ScimError> {
    let (ext, def) = match &attr.urn {
        None => (None, kind.core_attribute(&attr.name)),
        Some(u) if u.eq_ignore_ascii_case(kind.core_urn()) => (None, kind.core_attribute(&attr.name)),
        Some(u) => match kind.extension(u) {
            Some((urn, attrs)) => (Some(urn), attrs.iter().find(|a| a.name.eq_ignore_ascii_case(&attr.name))),
            None => return Err(ScimError::invalid_path(format!("unknown schema {u:?}"))),
        },
    };
    let def = def.ok_or_else(|| ScimError::invalid_path(format!("{attr} is not an attribute of a {}", kind.name())))?;
    Ok(Target { ext, def })
}

fn container<'a>(
    attrs: &'a mut Map<String, Value>,
    ext: Option<&str>,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    match ext {
        None => Ok(attrs),
        Some(urn) => {
            let slot = attrs.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot.as_object_mut().ok_or(ScimError::Internal)
        }
    }
}

/// Removes empty objects and arrays left behind by an operation.
fn tidy(attrs: &mut Map<String, Value>) {
    attrs.retain(|_, v| match v {
        Value::Object(o) => {
            tidy(o);
            !o.is_empty()
        }
        Value::Array(a) => !a.is_empty(),
        Value::Null => false,
        _ => true,
    });
}

/// Applies operations to a resource's attributes (as produced by
/// `UserData::to_attributes` / `GroupData::to_attributes`, plus `members`
/// when loaded). `id` is the resource's id, for Okta's echoed ids. The
/// result still needs validation by the caller (required attributes).
pub fn apply_operations(
    kind: ResourceKind,
    id: &str,
    attrs: &mut Map<String, Value>,
    ops: Vec<PatchOperation>,
) -> Result<(), ScimError> {
    for op in ops {
        apply_operation(kind, id, attrs, op)?;
    }
    tidy(attrs);
    Ok(())
}

fn apply_operation(
    kind: ResourceKind,
    id: &str,
    attrs: &mut Map<String, Value>,
    op: PatchOperation,
) -> Result<(), ScimError> {
    match op.path {
        Some(path) => match whole_extension(kind, &path) {
            Some(urn) => apply_whole_extension(kind, id, attrs, op.op, urn, op.value),
            None => apply_at(kind, attrs, op.op, &path, op.value),
        },
        None => {
            let Some(Value::Object(values)) = op.value else {
                return Err(ScimError::invalid_syntax("without a path, the value must be an object of attributes"));
            };
            for (key, value) in values {
                apply_pathless_key(kind, id, attrs, op.op, &key, value)?;
            }
            Ok(())
        }
    }
}

/// A path naming a whole extension (`urn:…:enterprise:2.0:User`) parses as schema
/// `urn:…:2.0` and attribute `User`; this recognises it as the extension itself.
fn whole_extension(kind: ResourceKind, path: &PatchPath) -> Option<&'static str> {
    if path.filter.is_some() || path.attr.sub.is_some() {
        return None;
    }
    let urn = path.attr.urn.as_ref()?;
    kind.extension(&format!("{urn}:{}", path.attr.name)).map(|(u, _)| u)
}

/// add merges into the extension object, replace swaps it whole, remove drops it.
fn apply_whole_extension(
    kind: ResourceKind,
    id: &str,
    attrs: &mut Map<String, Value>,
    op: PatchOpKind,
    urn: &'static str,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if matches!(op, PatchOpKind::Remove | PatchOpKind::Replace) {
        attrs.retain(|k, _| !k.eq_ignore_ascii_case(urn));
    }
    match (op, value) {
        (PatchOpKind::Remove, _) => Ok(()),
        (_, Some(value)) => apply_pathless_key(kind, id, attrs, PatchOpKind::Add, urn, value),
        (_, None) => Err(ScimError::invalid_syntax("add and replace need a value")),
    }
}

fn apply_pathless_key(
    kind: ResourceKind,
    id: &str,
    attrs: &mut Map<String, Value>,
    op: PatchOpKind,
    key: &str,
    value: Value,
) -> Result<(), ScimError> {
    if key.eq_ignore_ascii_case("id") {
        return if value.as_str() == Some(id) {
            Ok(()) // Okta echoes the id in its rename PATCH.
        } else {
            Err(ScimError::mutability("id is read-only"))
        };
    }
    if key.eq_ignore_ascii_case("schemas") || key.eq_ignore_ascii_case("meta") {
        return Ok(());
    }
    // A whole extension object: each of its attributes is a target.
    if let Some((urn, _)) = kind.extension(key) {
        let Value::Object(inner) = value else {
            return Err(ScimError::invalid_value(format!("{urn} must be an object")));
        };
        for (k, v) in inner {
            // Some clients serialise the extension as a resource, with its own `schemas`.
            if k.eq_ignore_ascii_case("schemas") || k.eq_ignore_ascii_case("meta") {
                continue;
            }
            let path = PatchPath {
                attr: AttrPath { urn: Some(urn.to_string()), ..AttrPath::parse(&k).map_err(ScimError::invalid_path)? },
                filter: None,
                filter_sub: None,
            };
            apply_at(kind, attrs, op, &path, Some(v))?;
        }
        return Ok(());
    }
    // Entra: keys that are paths ("name.givenName", "urn:...:employeeNumber").
    let path = match PatchPath::parse(key) {
        Ok(p) => p,
        Err(_) => {
            tracing::debug!(key, "unknown path-less PATCH key ignored");
            return Ok(());
        }
    };
    if resolve(kind, &path.attr).is_err() {
        tracing::debug!(key, "unknown path-less PATCH key ignored");
        return Ok(());
    }
    apply_at(kind, attrs, op, &path, Some(value))
}

fn check_writable(def: &AttributeDef, attr: &AttrPath) -> Result<(), ScimError> {
    if def.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!("{attr} is read-only")));
    }
    Ok(())
}

fn apply_at(
    kind: ResourceKind,
    attrs: &mut Map<String, Value>,
    op: PatchOpKind,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let target = resolve(kind, &path.attr)?;
    let def = target.def;
    check_writable(def, &path.attr)?;
    let obj = container(attrs, target.ext)?;
    let name = def.name;

    if let Some(filter) = &path.filter {
        if !def.multi_valued || def.ty != AttrType::Complex {
            return Err(ScimError::invalid_path(format!(
                "{name} is not a multi-valued complex attribute; it takes no filter"
            )));
        }
        let sub_def = match &path.filter_sub {
            Some(s) => {
                Some(def.sub(s).ok_or_else(|| ScimError::invalid_path(format!("{name} has no sub-attribute {s:?}")))?)
            }
            None => None,
        };
        return apply_filtered(kind, obj, def, &path.attr, filter, sub_def, op, value);
    }

    if let Some(sub) = &path.attr.sub {
        let sub_def =
            def.sub(sub).ok_or_else(|| ScimError::invalid_path(format!("{name} has no sub-attribute {sub:?}")))?;
        if sub_def.mutability == Mutability::ReadOnly {
            return Err(ScimError::mutability(format!("{name}.{sub} is read-only")));
        }
        return match op {
            PatchOpKind::Remove => {
                match obj.get_mut(name) {
                    Some(Value::Object(o)) => {
                        o.remove(sub_def.name);
                    }
                    Some(Value::Array(items)) => {
                        for i in items {
                            if let Some(o) = i.as_object_mut() {
                                o.remove(sub_def.name);
                            }
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let v = schema::coerce_scalar(sub_def, value.unwrap_or(Value::Null))
                    .map_err(|e| ScimError::invalid_value(format!("{name}.{e}")))?;
                if def.multi_valued {
                    let Some(Value::Array(items)) = obj.get_mut(name) else {
                        return Err(ScimError::no_target(format!(
                            "{name} has no values to set {sub} on; use a value filter"
                        )));
                    };
                    for i in items.iter_mut() {
                        if let Some(o) = i.as_object_mut() {
                            o.insert(sub_def.name.to_string(), v.clone());
                        }
                    }
                    return Ok(());
                }
                let slot = obj.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Some(o) = slot.as_object_mut() {
                    o.insert(sub_def.name.to_string(), v);
                }
                Ok(())
            }
        };
    }

    match op {
        PatchOpKind::Remove => {
            match (value, def.multi_valued) {
                (Some(v), true) if !v.is_null() => remove_values(obj, def, v)?,
                _ => {
                    if def.required {
                        return Err(ScimError::invalid_value(format!("{name} is required")));
                    }
                    obj.remove(name);
                }
            }
            Ok(())
        }
        PatchOpKind::Add => {
            let new = normalize_value(def, value.unwrap_or(Value::Null)).map_err(ScimError::invalid_value)?;
            let Some(new) = new else { return Ok(()) };
            match (def.multi_valued, new) {
                (true, Value::Array(new_items)) => {
                    let slot = obj.entry(name.to_string()).or_insert_with(|| Value::Array(Vec::new()));
                    if !slot.is_array() {
                        *slot = Value::Array(Vec::new());
                    }
                    if let Value::Array(items) = slot {
                        for n in new_items {
                            if !items.contains(&n) {
                                if is_primary(&n) {
                                    clear_primary(items);
                                }
                                items.push(n);
                            }
                        }
                    }
                }
                (false, Value::Object(new_obj)) => merge_into(obj, name, new_obj),
                (_, v) => {
                    obj.insert(name.to_string(), v);
                }
            }
            Ok(())
        }
        PatchOpKind::Replace => {
            let new = normalize_value(def, value.unwrap_or(Value::Null)).map_err(ScimError::invalid_value)?;
            match new {
                None => {
                    if def.required {
                        return Err(ScimError::invalid_value(format!("{name} is required")));
                    }
                    obj.remove(name);
                }
                Some(Value::Object(new_obj)) if !def.multi_valued => merge_into(obj, name, new_obj),
                Some(v) => {
                    obj.insert(name.to_string(), v);
                }
            }
            Ok(())
        }
    }
}

fn merge_into(obj: &mut Map<String, Value>, name: &str, new: Map<String, Value>) {
    let slot = obj.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Some(o) = slot.as_object_mut() {
        o.extend(new);
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

fn clear_primary(items: &mut [Value]) {
    for i in items {
        if let Some(o) = i.as_object_mut()
            && o.get("primary") == Some(&Value::Bool(true))
        {
            o.remove("primary");
        }
    }
}

/// `remove` with a value on a multi-valued attribute: removes the elements
/// whose `value` equals one of the given values.
fn remove_values(obj: &mut Map<String, Value>, def: &AttributeDef, v: Value) -> Result<(), ScimError> {
    let wanted = match v {
        Value::Array(items) => items,
        single => vec![single],
    };
    let case_exact =
        if def.ty == AttrType::Complex { def.sub("value").is_some_and(|d| d.case_exact) } else { def.case_exact };
    let key = |v: &Value| -> Option<String> {
        let raw = match v {
            Value::Object(o) => get_ci(o, "value")?.as_str()?.to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some(if case_exact { raw } else { raw.to_lowercase() })
    };
    let wanted: BTreeSet<String> = wanted.iter().filter_map(key).collect();
    if wanted.is_empty() {
        return Err(ScimError::invalid_value(format!("remove of {} values needs objects with a value", def.name)));
    }
    if let Some(Value::Array(items)) = obj.get_mut(def.name) {
        items.retain(|i| key(i).is_none_or(|k| !wanted.contains(&k)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    kind: ResourceKind,
    obj: &mut Map<String, Value>,
    def: &'static AttributeDef,
    attr: &AttrPath,
    filter: &ScimFilter,
    sub_def: Option<&'static AttributeDef>,
    op: PatchOpKind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let name = def.name;
    let parent = AttrPath::new(name);
    let _ = attr;
    let mut items = match obj.remove(name) {
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    let matched: Vec<usize> =
        items.iter().enumerate().filter(|(_, i)| filter.matches_element(i, kind, &parent)).map(|(n, _)| n).collect();
    let result = (|| {
        match op {
            PatchOpKind::Remove => {
                match sub_def {
                    None => {
                        let mut n = 0;
                        items.retain(|_| {
                            let keep = !matched.contains(&n);
                            n += 1;
                            keep
                        });
                    }
                    Some(sd) => {
                        for &i in &matched {
                            if let Some(o) = items[i].as_object_mut() {
                                o.remove(sd.name);
                            }
                        }
                    }
                }
                Ok(())
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let value = value.unwrap_or(Value::Null);
                // What to write into each matched element.
                let patch: Map<String, Value> = match sub_def {
                    Some(sd) => {
                        if sd.mutability == Mutability::ReadOnly {
                            return Err(ScimError::mutability(format!("{name}.{} is read-only", sd.name)));
                        }
                        let v = schema::coerce_scalar(sd, value)
                            .map_err(|e| ScimError::invalid_value(format!("{name}.{e}")))?;
                        std::iter::once((sd.name.to_string(), v)).collect()
                    }
                    None => {
                        let single = match value {
                            Value::Array(mut a) if a.len() == 1 => a.pop().unwrap_or(Value::Null),
                            v => v,
                        };
                        let mut tmp = Map::new();
                        tmp.insert("x".into(), Value::Array(vec![single]));
                        match normalize_value(def, tmp.remove("x").unwrap_or(Value::Null))
                            .map_err(ScimError::invalid_value)?
                        {
                            Some(Value::Array(mut a)) => match a.pop() {
                                Some(Value::Object(o)) => o,
                                _ => Map::new(),
                            },
                            _ => Map::new(),
                        }
                    }
                };
                if matched.is_empty() {
                    // Upsert when the filter says what the element is.
                    // Only when the filter names a kind of value (`type eq
                    // "work"`), not the value itself.
                    let eqs =
                        filter.simple_eqs().filter(|eqs| !eqs.iter().any(|(k, _)| k.eq_ignore_ascii_case("value")));
                    let Some(eqs) = eqs else {
                        return Err(ScimError::no_target(format!("no value of {name} matches the filter")));
                    };
                    let mut element = Map::new();
                    for (k, v) in eqs {
                        let sd = def
                            .sub(k)
                            .ok_or_else(|| ScimError::invalid_path(format!("{name} has no sub-attribute {k:?}")))?;
                        element.insert(sd.name.to_string(), Value::String(v.to_string()));
                    }
                    element.extend(patch);
                    let element = Value::Object(element);
                    if is_primary(&element) {
                        clear_primary(&mut items);
                    }
                    items.push(element);
                    return Ok(());
                }
                let sets_primary = patch.get("primary") == Some(&Value::Bool(true));
                if sets_primary {
                    clear_primary(&mut items);
                }
                for &i in &matched {
                    match (&mut items[i], op, sub_def) {
                        (Value::Object(o), PatchOpKind::Replace, None) => {
                            *o = patch.clone();
                        }
                        (Value::Object(o), _, _) => o.extend(patch.clone()),
                        (other, _, _) => *other = Value::Object(patch.clone()),
                    }
                }
                Ok(())
            }
        }
    })();
    if !items.is_empty() {
        obj.insert(name.to_string(), Value::Array(items));
    }
    result
}

/// How a group PATCH touches `members`.
#[derive(Debug, Default, PartialEq)]
pub struct GroupPatchPlan {
    /// Operations on other attributes, applied to the group's attributes.
    pub attribute_ops: Vec<PatchOperation>,
    /// The membership delta, when every member operation could be expressed
    /// as one; `None` when some member operation needs the full member list
    /// (a filter on something other than `value`, a sub-attribute path): the
    /// caller then loads the members and applies `member_ops` generically.
    pub members: Option<MembershipChange>,
    /// The member operations (kept for the fallback).
    pub member_ops: Vec<PatchOperation>,
}

#[derive(Default)]
struct DeltaBuilder {
    replace_all: Option<BTreeMap<String, NewMember>>,
    add: BTreeMap<String, NewMember>,
    remove: BTreeSet<String>,
}

impl DeltaBuilder {
    fn add(&mut self, m: NewMember) {
        match &mut self.replace_all {
            Some(all) => {
                all.insert(m.value.clone(), m);
            }
            None => {
                self.remove.remove(&m.value);
                self.add.insert(m.value.clone(), m);
            }
        }
    }
    fn remove(&mut self, id: String) {
        match &mut self.replace_all {
            Some(all) => {
                all.remove(&id);
            }
            None => {
                self.add.remove(&id);
                self.remove.insert(id);
            }
        }
    }
    fn replace(&mut self, members: Vec<NewMember>) {
        self.add.clear();
        self.remove.clear();
        self.replace_all = Some(members.into_iter().map(|m| (m.value.clone(), m)).collect());
    }
    fn finish(self) -> MembershipChange {
        match self.replace_all {
            Some(all) => MembershipChange { replace_all: Some(all.into_values().collect()), ..Default::default() },
            None => MembershipChange {
                add: self.add.into_values().collect(),
                remove: self.remove.into_iter().collect(),
                replace_all: None,
            },
        }
    }
}

/// Splits a group PATCH into attribute operations and a membership delta.
pub fn plan_group_patch(ops: Vec<PatchOperation>) -> Result<GroupPatchPlan, ScimError> {
    let mut plan = GroupPatchPlan::default();
    let mut delta = DeltaBuilder::default();
    let mut fast = true;
    for op in ops {
        match &op.path {
            None => {
                // Path-less: pull a `members` key out into its own operation.
                let Some(Value::Object(mut values)) = op.value else {
                    plan.attribute_ops.push(op);
                    continue;
                };
                let key = values.keys().find(|k| k.eq_ignore_ascii_case("members")).cloned();
                if let Some(k) = key
                    && let Some(members) = values.remove(&k)
                {
                    let member_op = PatchOperation {
                        op: op.op,
                        path: Some(PatchPath { attr: AttrPath::new("members"), filter: None, filter_sub: None }),
                        value: Some(members),
                    };
                    fast &= plan_member_op(&member_op, &mut delta)?;
                    plan.member_ops.push(member_op);
                }
                if !values.is_empty() {
                    plan.attribute_ops.push(PatchOperation {
                        op: op.op,
                        path: None,
                        value: Some(Value::Object(values)),
                    });
                }
            }
            Some(p)
                if p.attr.name.eq_ignore_ascii_case("members")
                    && p.attr.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(schema::GROUP_URN)) =>
            {
                if fast {
                    fast = plan_member_op(&op, &mut delta)?;
                }
                plan.member_ops.push(op);
            }
            Some(_) => plan.attribute_ops.push(op),
        }
    }
    plan.members = fast.then(|| delta.finish());
    Ok(plan)
}

/// Folds one member operation into the delta; `false` when it needs the
/// full member list.
fn plan_member_op(op: &PatchOperation, delta: &mut DeltaBuilder) -> Result<bool, ScimError> {
    let Some(path) = &op.path else { return Ok(false) };
    if path.attr.sub.is_some() || path.filter_sub.is_some() {
        return Ok(false);
    }
    match (&path.filter, op.op) {
        (None, PatchOpKind::Add) => {
            for m in member_ids(op.value.clone().unwrap_or(Value::Null), "members")? {
                delta.add(m);
            }
            Ok(true)
        }
        (None, PatchOpKind::Replace) => {
            delta.replace(member_ids(op.value.clone().unwrap_or(Value::Null), "members")?);
            Ok(true)
        }
        (None, PatchOpKind::Remove) => {
            match &op.value {
                None | Some(Value::Null) => delta.replace(Vec::new()),
                // Entra: remove with path "members" and a value list.
                Some(v) => {
                    for m in member_ids(v.clone(), "members")? {
                        delta.remove(m.value);
                    }
                }
            }
            Ok(true)
        }
        (Some(f), PatchOpKind::Remove) => match f.value_eq_ids() {
            Some(ids) => {
                for id in ids {
                    delta.remove(id.to_string());
                }
                Ok(true)
            }
            None => Ok(false),
        },
        (Some(_), _) => Ok(false),
    }
}

#[cfg(test)]
mod whole_extension_tests {
    use super::*;
    use serde_json::json;

    fn patch(attrs: &mut Map<String, Value>, body: Value) -> Result<(), ScimError> {
        let ops = parse_patch_request(body)?;
        apply_operations(ResourceKind::User, "u1", attrs, ops)
    }

    const EXT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    #[test]
    fn a_path_may_name_a_whole_extension() {
        let mut attrs = Map::new();
        attrs.insert("userName".into(), json!("ada"));
        let op = |op: &str, value: Value| {
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": op, "path": EXT, "value": value}]})
        };
        patch(&mut attrs, op("add", json!({"schemas": [EXT], "employeeNumber": "7", "department": "R&D"}))).unwrap();
        assert_eq!(attrs[EXT]["employeeNumber"], json!("7"));
        patch(&mut attrs, op("replace", json!({"department": "Ops"}))).unwrap();
        assert_eq!(attrs[EXT], json!({"department": "Ops"}), "replace swaps the whole object");
        let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "remove", "path": EXT}]});
        patch(&mut attrs, remove).unwrap();
        assert!(!attrs.contains_key(EXT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ops(v: Value) -> Vec<PatchOperation> {
        parse_patch_request(v).unwrap()
    }

    fn user() -> Map<String, Value> {
        json!({
            "userName": "bjensen@example.com",
            "active": true,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}]
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn patch(attrs: &mut Map<String, Value>, body: Value) -> Result<(), ScimError> {
        apply_operations(ResourceKind::User, "u1", attrs, parse_patch_request(body)?)
    }

    #[test]
    fn okta_deactivate_pathless_replace() {
        let mut u = user();
        patch(
            &mut u,
            json!({"schemas": [schema::PATCH_OP_URN], "Operations": [{"op": "replace", "value": {"active": false}}]}),
        )
        .unwrap();
        assert_eq!(u["active"], json!(false));
    }

    #[test]
    fn entra_capitalised_ops_string_booleans_and_dotted_keys() {
        let mut u = user();
        patch(
            &mut u,
            json!({"schemas": [schema::PATCH_OP_URN], "Operations": [
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Replace", "value": {
                    "name.givenName": "Babs",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7865",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "m1"}
                }},
                {"op": "Add", "path": "emails[type eq \"home\"].value", "value": "babs@home.org"}
            ]}),
        )
        .unwrap();
        assert_eq!(u["active"], json!(false));
        assert_eq!(u["name"]["givenName"], "Babs");
        assert_eq!(u["name"]["familyName"], "Jensen");
        assert_eq!(u[schema::ENTERPRISE_USER_URN]["employeeNumber"], "7865");
        assert_eq!(u[schema::ENTERPRISE_USER_URN]["manager"]["value"], "m1");
        assert_eq!(u["emails"][1], json!({"type": "home", "value": "babs@home.org"}));
    }

    #[test]
    fn filtered_replace_and_remove() {
        let mut u = user();
        patch(
            &mut u,
            json!({"Operations": [
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}
            ]}),
        )
        .unwrap();
        assert_eq!(u["emails"][0]["value"], "new@example.com");
        assert_eq!(u["emails"][0]["primary"], true);
        patch(&mut u, json!({"Operations": [{"op": "remove", "path": "emails[value eq \"NEW@example.com\"]"}]}))
            .unwrap();
        assert!(!u.contains_key("emails"));
    }

    #[test]
    fn errors_have_the_right_scim_type() {
        let cases = [
            (json!({"Operations": [{"op": "remove"}]}), "noTarget"),
            (json!({"Operations": [{"op": "replace", "path": "id", "value": "x"}]}), "mutability"),
            (json!({"Operations": [{"op": "replace", "value": {"id": "other"}}]}), "mutability"),
            (json!({"Operations": [{"op": "replace", "path": "meta.created", "value": "x"}]}), "mutability"),
            (json!({"Operations": [{"op": "add", "path": "nope", "value": "x"}]}), "invalidPath"),
            (json!({"Operations": [{"op": "add", "path": "emails[type eq", "value": "x"}]}), "invalidPath"),
            (
                json!({"Operations": [{"op": "replace", "path": "emails[type co \"x\"].value", "value": "x"}]}),
                "noTarget",
            ),
            (json!({"Operations": [{"op": "replace", "path": "active", "value": "perhaps"}]}), "invalidValue"),
            (json!({"Operations": [{"op": "move", "path": "active"}]}), "invalidSyntax"),
            (json!({"Operations": []}), "invalidValue"),
            (json!({"Operations": [{"op": "add", "path": "userName"}]}), "invalidSyntax"),
            (
                json!({"schemas": ["urn:x"], "Operations": [{"op": "add", "path": "title", "value": "x"}]}),
                "invalidValue",
            ),
            (json!({"Operations": [{"op": "remove", "path": "userName"}]}), "invalidValue"),
        ];
        for (body, want) in cases {
            let mut u = user();
            let e = patch(&mut u, body.clone()).unwrap_err();
            assert_eq!(e.to_json()["scimType"], want, "{body}: {e}");
        }
    }

    #[test]
    fn okta_rename_echoes_id() {
        let plan = plan_group_patch(ops(json!({"Operations": [
            {"op": "replace", "value": {"id": "g1", "displayName": "Renamed"}}
        ]})))
        .unwrap();
        let mut g = json!({"displayName": "Old"}).as_object().cloned().unwrap();
        apply_operations(ResourceKind::Group, "g1", &mut g, plan.attribute_ops).unwrap();
        assert_eq!(g["displayName"], "Renamed");
        assert_eq!(plan.members, Some(MembershipChange::default()));
    }

    #[test]
    fn member_ops_become_a_delta() {
        let plan = plan_group_patch(ops(json!({"Operations": [
            {"op": "Add", "path": "members", "value": [{"value": "a"}, {"value": "b", "display": "B"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "c"}]},
            {"op": "remove", "path": "members[value eq \"b\" or value eq \"d\"]"},
            {"op": "add", "value": {"members": [{"value": "d"}], "displayName": "x"}}
        ]})))
        .unwrap();
        let m = plan.members.unwrap();
        let added: Vec<&str> = m.add.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(added, ["a", "d"]);
        assert_eq!(m.remove, ["b", "c"]);
        assert_eq!(plan.attribute_ops.len(), 1);

        let plan = plan_group_patch(ops(json!({"Operations": [
            {"op": "remove", "path": "members"},
            {"op": "add", "path": "members", "value": [{"value": "z"}]}
        ]})))
        .unwrap();
        let m = plan.members.unwrap();
        assert_eq!(m.replace_all.unwrap()[0].value, "z");

        let plan = plan_group_patch(ops(json!({"Operations": [
            {"op": "remove", "path": "members[display eq \"x\"]"}
        ]})))
        .unwrap();
        assert!(plan.members.is_none());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-zA-Z \"]{0,6}".prop_map(Value::String),
            Just(json!("False")),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("value".to_string()),
                        Just("type".to_string()),
                        Just("primary".to_string()),
                        Just("givenName".to_string()),
                        Just("name.givenName".to_string()),
                        Just("emails".to_string()),
                        Just("id".to_string()),
                        Just(format!("{}:employeeNumber", schema::ENTERPRISE_USER_URN)),
                        "[a-z]{1,5}",
                    ],
                    inner,
                    0..3
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_path() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just("emails".to_string()),
            Just("emails.value".to_string()),
            Just("emails[type eq \"work\"]".to_string()),
            Just("emails[type eq \"work\"].value".to_string()),
            Just("emails[value co \"x\" or primary eq true].type".to_string()),
            Just("name".to_string()),
            Just("name.givenName".to_string()),
            Just("active".to_string()),
            Just("userName".to_string()),
            Just("title".to_string()),
            Just("id".to_string()),
            Just("members[value eq \"a\"]".to_string()),
            Just(format!("{}:manager.value", schema::ENTERPRISE_USER_URN)),
            "[a-zA-Z.\\[\\]\" ]{0,20}",
        ])
    }

    fn arb_op() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("add"), Just("Replace"), Just("remove"), Just("bogus")],
            arb_path(),
            prop::option::of(arb_json()),
        )
            .prop_map(|(op, path, value)| {
                let mut o = Map::new();
                o.insert("op".into(), op.into());
                if let Some(p) = path {
                    o.insert("path".into(), p.into());
                }
                if let Some(v) = value {
                    o.insert("value".into(), v);
                }
                Value::Object(o)
            })
    }

    proptest! {
        #[test]
        fn patch_never_panics(ops in prop::collection::vec(arb_op(), 1..5)) {
            let body = json!({"schemas": [schema::PATCH_OP_URN], "Operations": ops});
            let mut u = user();
            let _ = patch(&mut u, body.clone());
            if let Ok(parsed) = parse_patch_request(body) {
                let _ = plan_group_patch(parsed);
            }
        }

        #[test]
        fn add_then_remove_restores(
            title in "[a-zA-Z0-9 ]{1,12}",
            email in "[a-z]{1,8}@[a-z]{1,8}\\.org",
            given in "[A-Za-z]{1,10}",
        ) {
            let original = user();
            let mut u = original.clone();
            patch(&mut u, json!({"Operations": [
                {"op": "add", "path": "title", "value": title},
                {"op": "add", "path": "emails", "value": [{"value": email, "type": "other"}]},
                {"op": "add", "path": "name.middleName", "value": given},
                {"op": "add", "path": format!("{}:department", schema::ENTERPRISE_USER_URN), "value": "d"},
            ]})).unwrap();
            prop_assert_ne!(&u, &original);
            patch(&mut u, json!({"Operations": [
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": format!("emails[value eq \"{email}\"]")},
                {"op": "remove", "path": "name.middleName"},
                {"op": "remove", "path": format!("{}:department", schema::ENTERPRISE_USER_URN)},
            ]})).unwrap();
            prop_assert_eq!(u, original);
        }

        #[test]
        fn member_add_then_remove_is_empty_delta(ids in prop::collection::btree_set("[a-z0-9]{1,8}", 1..20)) {
            let members: Vec<Value> = ids.iter().map(|i| json!({"value": i})).collect();
            let mut operations = vec![json!({"op": "add", "path": "members", "value": members})];
            for i in &ids {
                operations.push(json!({"op": "remove", "path": format!("members[value eq \"{i}\"]")}));
            }
            let plan = plan_group_patch(parse_patch_request(json!({"Operations": operations})).unwrap()).unwrap();
            let m = plan.members.unwrap();
            prop_assert!(m.add.is_empty());
            prop_assert_eq!(m.remove.len(), ids.len());
        }
    }
}
