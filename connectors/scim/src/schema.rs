//! The schemas this server speaks (RFC 7643 §4 User and Group, §4.3 the
//! enterprise User extension), their attribute characteristics, and the
//! discovery documents built from them. Everything that needs to know whether
//! an attribute is case-exact, read-only or multi-valued asks here, so the
//! discovery endpoints tell the same truth the code acts on.

use serde_json::{Map, Value, json};

/// Core User schema.
pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema.
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension.
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// List response message.
pub const LIST_RESPONSE_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH message.
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Search request message.
pub const SEARCH_REQUEST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Error message.
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Service provider configuration schema.
pub const SERVICE_PROVIDER_CONFIG_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// Resource type schema.
pub const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// Schema schema.
pub const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// The group schema Microsoft Entra's provisioning service lists in group
/// bodies (from Microsoft's "develop a SCIM endpoint" tutorial). It carries no
/// attributes; tolerated by default.
pub const ENTRA_ADSCIM_GROUP_URN: &str = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// `string`
    String,
    /// `boolean`
    Boolean,
    /// `decimal`
    Decimal,
    /// `integer`
    Integer,
    /// `dateTime`
    DateTime,
    /// `reference`
    Reference,
    /// `binary`
    Binary,
    /// `complex`
    Complex,
}

impl AttrType {
    fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Binary => "binary",
            AttrType::Complex => "complex",
        }
    }
}

/// RFC 7643 §2.2 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the service provider only.
    ReadOnly,
    /// Writable.
    ReadWrite,
    /// Set once.
    Immutable,
    /// Written, never returned.
    WriteOnly,
}

/// RFC 7643 §2.2 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always returned, even when not asked for.
    Always,
    /// Never returned.
    Never,
    /// Returned unless excluded.
    Default,
    /// Returned only when asked for.
    Request,
}

/// One attribute and its characteristics.
#[derive(Debug)]
pub struct AttributeDef {
    /// The canonical name.
    pub name: &'static str,
    /// Data type.
    pub ty: AttrType,
    /// Multi-valued?
    pub multi_valued: bool,
    /// Required?
    pub required: bool,
    /// String comparison is case-sensitive?
    pub case_exact: bool,
    /// Mutability.
    pub mutability: Mutability,
    /// When returned.
    pub returned: Returned,
    /// `server` uniqueness?
    pub unique: bool,
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: &'static [AttributeDef],
    /// Canonical values, when the schema suggests some.
    pub canonical_values: &'static [&'static str],
    /// Referenced resource types for references.
    pub reference_types: &'static [&'static str],
    /// Human description.
    pub description: &'static str,
}

const fn attr(name: &'static str, ty: AttrType, description: &'static str) -> AttributeDef {
    AttributeDef {
        name,
        ty,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique: false,
        sub_attributes: &[],
        canonical_values: &[],
        reference_types: &[],
        description,
    }
}

const fn s(name: &'static str, description: &'static str) -> AttributeDef {
    attr(name, AttrType::String, description)
}

impl AttributeDef {
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    const fn subs(mut self, subs: &'static [AttributeDef]) -> Self {
        self.sub_attributes = subs;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical_values = values;
        self
    }
    const fn refs(mut self, types: &'static [&'static str]) -> Self {
        self.reference_types = types;
        self
    }

    /// Finds a sub-attribute, case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&'static AttributeDef> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The RFC 7643 §7 representation of this attribute.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), self.name.into());
        o.insert("type".into(), self.ty.as_str().into());
        o.insert("multiValued".into(), self.multi_valued.into());
        o.insert("description".into(), self.description.into());
        o.insert("required".into(), self.required.into());
        if self.ty != AttrType::Complex && self.ty != AttrType::Boolean {
            o.insert("caseExact".into(), self.case_exact.into());
        }
        o.insert(
            "mutability".into(),
            match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
                Mutability::WriteOnly => "writeOnly",
            }
            .into(),
        );
        o.insert(
            "returned".into(),
            match self.returned {
                Returned::Always => "always",
                Returned::Never => "never",
                Returned::Default => "default",
                Returned::Request => "request",
            }
            .into(),
        );
        o.insert("uniqueness".into(), if self.unique { "server" } else { "none" }.into());
        if !self.canonical_values.is_empty() {
            o.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if !self.reference_types.is_empty() {
            o.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.sub_attributes.is_empty() {
            o.insert("subAttributes".into(), Value::Array(self.sub_attributes.iter().map(|a| a.to_json()).collect()));
        }
        Value::Object(o)
    }
}

const TYPES: &[&str] = &["work", "home", "other"];

const MULTI_STRING_SUBS: &[AttributeDef] = &[
    s("value", "the value"),
    s("display", "a human-readable name").mutability(Mutability::ReadOnly),
    s("type", "a label indicating the attribute's function").canonical(TYPES),
    attr("primary", AttrType::Boolean, "the primary value"),
];

const EMAIL_SUBS: &[AttributeDef] = &[
    s("value", "email address"),
    s("display", "a human-readable name"),
    s("type", "work, home or other").canonical(TYPES),
    attr("primary", AttrType::Boolean, "the primary email address"),
];

const NAME_SUBS: &[AttributeDef] = &[
    s("formatted", "the full name"),
    s("familyName", "family name"),
    s("givenName", "given name"),
    s("middleName", "middle name"),
    s("honorificPrefix", "honorific prefix"),
    s("honorificSuffix", "honorific suffix"),
];

const ADDRESS_SUBS: &[AttributeDef] = &[
    s("formatted", "the full mailing address"),
    s("streetAddress", "street address"),
    s("locality", "city or locality"),
    s("region", "state or region"),
    s("postalCode", "zip or postal code"),
    s("country", "country"),
    s("type", "work, home or other").canonical(TYPES),
    attr("primary", AttrType::Boolean, "the primary address"),
];

const USER_GROUP_SUBS: &[AttributeDef] = &[
    s("value", "the group's id").mutability(Mutability::ReadOnly),
    attr(REF_ATTR, AttrType::Reference, "the group's URI").refs(&["Group"]).mutability(Mutability::ReadOnly),
    s("display", "the group's displayName").mutability(Mutability::ReadOnly),
    s("type", "direct or indirect").canonical(&["direct", "indirect"]).mutability(Mutability::ReadOnly),
];

const REF_ATTR: &str = "$ref";

const META_SUBS: &[AttributeDef] = &[
    s("resourceType", "the resource type").exact().mutability(Mutability::ReadOnly),
    attr("created", AttrType::DateTime, "when the resource was created").mutability(Mutability::ReadOnly),
    attr("lastModified", AttrType::DateTime, "when the resource last changed").mutability(Mutability::ReadOnly),
    attr("location", AttrType::Reference, "the URI of the resource").exact().mutability(Mutability::ReadOnly),
    s("version", "the resource's version (weak ETag)").exact().mutability(Mutability::ReadOnly),
];

/// The attributes every resource has (RFC 7643 §3.1).
pub const COMMON_ATTRIBUTES: &[AttributeDef] = &[
    s("id", "the service provider's unique identifier")
        .exact()
        .mutability(Mutability::ReadOnly)
        .returned(Returned::Always)
        .unique(),
    s("externalId", "the provisioning client's identifier").exact(),
    attr("meta", AttrType::Complex, "resource metadata").mutability(Mutability::ReadOnly).subs(META_SUBS),
];

/// Core User attributes (RFC 7643 §4.1).
pub const USER_ATTRIBUTES: &[AttributeDef] = &[
    s("userName", "unique identifier for the user, unique case-insensitively").required().unique(),
    attr("name", AttrType::Complex, "the user's name").subs(NAME_SUBS),
    s("displayName", "name for display"),
    s("nickName", "casual name"),
    attr("profileUrl", AttrType::Reference, "profile URL").refs(&["external"]),
    s("title", "title"),
    s("userType", "relationship to the organization"),
    s("preferredLanguage", "preferred language"),
    s("locale", "locale"),
    s("timezone", "time zone"),
    attr("active", AttrType::Boolean, "whether the user is assigned and active"),
    s("password", "the user's password: accepted and discarded, never returned")
        .mutability(Mutability::WriteOnly)
        .returned(Returned::Never),
    attr("emails", AttrType::Complex, "email addresses").multi().subs(EMAIL_SUBS),
    attr("phoneNumbers", AttrType::Complex, "phone numbers").multi().subs(MULTI_STRING_SUBS),
    attr("ims", AttrType::Complex, "instant messaging addresses").multi().subs(MULTI_STRING_SUBS),
    attr("photos", AttrType::Complex, "photo URLs").multi().subs(MULTI_STRING_SUBS),
    attr("addresses", AttrType::Complex, "physical addresses").multi().subs(ADDRESS_SUBS),
    attr("groups", AttrType::Complex, "groups the user belongs to (read-only)")
        .multi()
        .mutability(Mutability::ReadOnly)
        .subs(USER_GROUP_SUBS),
    attr("entitlements", AttrType::Complex, "entitlements").multi().subs(MULTI_STRING_SUBS),
    attr("roles", AttrType::Complex, "roles").multi().subs(MULTI_STRING_SUBS),
    attr("x509Certificates", AttrType::Complex, "certificates").multi().subs(MULTI_STRING_SUBS),
];

const MANAGER_SUBS: &[AttributeDef] = &[
    s("value", "the manager's id"),
    attr(REF_ATTR, AttrType::Reference, "the manager's URI").refs(&["User"]),
    s("displayName", "the manager's name").mutability(Mutability::ReadOnly),
];

/// Enterprise User extension attributes (RFC 7643 §4.3).
pub const ENTERPRISE_ATTRIBUTES: &[AttributeDef] = &[
    s("employeeNumber", "employee number"),
    s("costCenter", "cost center"),
    s("organization", "organization"),
    s("division", "division"),
    s("department", "department"),
    attr("manager", AttrType::Complex, "the user's manager").subs(MANAGER_SUBS),
];

const MEMBER_SUBS: &[AttributeDef] = &[
    s("value", "the member's id").exact().mutability(Mutability::Immutable),
    attr(REF_ATTR, AttrType::Reference, "the member's URI").refs(&["User", "Group"]).mutability(Mutability::Immutable),
    s("display", "the member's name").mutability(Mutability::Immutable),
    s("type", "User or Group").canonical(&["User", "Group"]).mutability(Mutability::Immutable),
];

/// Core Group attributes (RFC 7643 §4.2).
pub const GROUP_ATTRIBUTES: &[AttributeDef] = &[
    s("displayName", "the group's name").required(),
    attr("members", AttrType::Complex, "the group's members").multi().subs(MEMBER_SUBS),
];

/// The two resource types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `/Users`
    User,
    /// `/Groups`
    Group,
}

impl ResourceKind {
    /// `User` or `Group`.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// `Users` or `Groups`, the endpoint.
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "Users",
            ResourceKind::Group => "Groups",
        }
    }

    /// The core schema URN.
    pub fn core_urn(self) -> &'static str {
        match self {
            ResourceKind::User => USER_URN,
            ResourceKind::Group => GROUP_URN,
        }
    }

    /// Core attributes, without the common ones.
    pub fn core_attributes(self) -> &'static [AttributeDef] {
        match self {
            ResourceKind::User => USER_ATTRIBUTES,
            ResourceKind::Group => GROUP_ATTRIBUTES,
        }
    }

    /// Extension schema URNs with their attributes.
    pub fn extensions(self) -> &'static [(&'static str, &'static [AttributeDef])] {
        match self {
            ResourceKind::User => &[(ENTERPRISE_USER_URN, ENTERPRISE_ATTRIBUTES)],
            ResourceKind::Group => &[],
        }
    }

    /// The extension with this URN (case-insensitive), canonical URN first.
    pub fn extension(self, urn: &str) -> Option<(&'static str, &'static [AttributeDef])> {
        self.extensions().iter().find(|(u, _)| u.eq_ignore_ascii_case(urn)).copied()
    }

    /// Finds a top-level core (or common) attribute, case-insensitively.
    pub fn core_attribute(self, name: &str) -> Option<&'static AttributeDef> {
        self.core_attributes().iter().chain(COMMON_ATTRIBUTES.iter()).find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Resolves an attribute by optional schema URN and name. `None` for the
    /// URN means the core schema (or the common attributes).
    pub fn attribute(self, urn: Option<&str>, name: &str) -> Option<&'static AttributeDef> {
        match urn {
            None => self.core_attribute(name),
            Some(u) if u.eq_ignore_ascii_case(self.core_urn()) => self.core_attribute(name),
            Some(u) => {
                self.extension(u).and_then(|(_, attrs)| attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name)))
            }
        }
    }

    /// Whether string comparisons on this attribute path are case-exact.
    /// Unknown attributes compare case-insensitively.
    pub fn case_exact(self, urn: Option<&str>, name: &str, sub: Option<&str>) -> bool {
        let Some(def) = self.attribute(urn, name) else {
            return false;
        };
        match sub {
            Some(sub) => def.sub(sub).map(|d| d.case_exact).unwrap_or(false),
            None if def.ty == AttrType::Complex => def.sub("value").map(|d| d.case_exact).unwrap_or(false),
            None => def.case_exact,
        }
    }

    /// The RFC 7643 §7 schema documents for this resource type (core first).
    pub fn schema_documents(self, base_url: &str) -> Vec<Value> {
        let mut docs = vec![schema_document(
            self.core_urn(),
            self.name(),
            match self {
                ResourceKind::User => "User Account",
                ResourceKind::Group => "Group",
            },
            self.core_attributes(),
            base_url,
        )];
        for (urn, attrs) in self.extensions() {
            docs.push(schema_document(urn, "EnterpriseUser", "Enterprise User", attrs, base_url));
        }
        docs
    }

    /// The RFC 7643 §6 resource type document.
    pub fn resource_type_document(self, base_url: &str) -> Value {
        let extensions: Vec<Value> =
            self.extensions().iter().map(|(urn, _)| json!({"schema": urn, "required": false})).collect();
        let mut doc = json!({
            "schemas": [RESOURCE_TYPE_URN],
            "id": self.name(),
            "name": self.name(),
            "endpoint": format!("/{}", self.endpoint()),
            "description": match self {
                ResourceKind::User => "User Account",
                ResourceKind::Group => "Group",
            },
            "schema": self.core_urn(),
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", self.name()),
            }
        });
        if !extensions.is_empty()
            && let Some(o) = doc.as_object_mut()
        {
            o.insert("schemaExtensions".into(), Value::Array(extensions));
        }
        doc
    }
}

fn schema_document(urn: &str, name: &str, description: &str, attrs: &[AttributeDef], base_url: &str) -> Value {
    let mut all: Vec<Value> = Vec::new();
    if urn == USER_URN || urn == GROUP_URN {
        // RFC 7643 §3.1 common attributes are not part of the schema
        // documents, except externalId which some validators look for.
        if let Some(ext) = COMMON_ATTRIBUTES.iter().find(|a| a.name == "externalId") {
            all.push(ext.to_json());
        }
    }
    all.extend(attrs.iter().map(|a| a.to_json()));
    json!({
        "schemas": [SCHEMA_URN],
        "id": urn,
        "name": name,
        "description": description,
        "attributes": all,
        "meta": {
            "resourceType": "Schema",
            "location": format!("{base_url}/Schemas/{urn}"),
        }
    })
}

/// Every schema document served at `/Schemas`.
pub fn all_schema_documents(base_url: &str) -> Vec<Value> {
    let mut docs = ResourceKind::User.schema_documents(base_url);
    docs.extend(ResourceKind::Group.schema_documents(base_url));
    docs
}

/// Coerces a JSON value to an attribute's type where real IdPs send the wrong
/// JSON type for it, and rejects values that cannot be coerced.
///
/// Dialect: Microsoft Entra sends booleans as strings (`"False"`, `"True"`);
/// they become booleans here (Microsoft's "Known issues with SCIM 2.0
/// protocol compliance", the `aadOptscim062020` flag section).
pub fn coerce_scalar(def: &AttributeDef, value: Value) -> Result<Value, String> {
    match (def.ty, value) {
        (_, Value::Null) => Ok(Value::Null),
        (AttrType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        (AttrType::Decimal, Value::Number(n)) => Ok(Value::Number(n)),
        (AttrType::String | AttrType::Reference | AttrType::Binary | AttrType::DateTime, Value::String(s)) => {
            if def.ty == AttrType::DateTime && chrono::DateTime::parse_from_rfc3339(&s).is_err() {
                return Err(format!("{} must be an RFC 3339 dateTime", def.name));
            }
            Ok(Value::String(s))
        }
        (AttrType::Complex, Value::Object(o)) => Ok(Value::Object(o)),
        (ty, other) => Err(format!("{} must be of type {}, got {}", def.name, ty.as_str(), json_type_name(&other))),
    }
}

/// The JSON type name, for error details.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_exactness_follows_rfc7643() {
        let u = ResourceKind::User;
        assert!(!u.case_exact(None, "USERNAME", None));
        assert!(u.case_exact(None, "id", None));
        assert!(u.case_exact(None, "externalId", None));
        assert!(!u.case_exact(None, "emails", Some("value")));
        assert!(!u.case_exact(None, "emails", None));
        assert!(u.case_exact(None, "meta", Some("version")));
        assert!(!u.case_exact(Some(ENTERPRISE_USER_URN), "employeeNumber", None));
        assert!(ResourceKind::Group.case_exact(None, "members", Some("value")));
        assert!(ResourceKind::Group.case_exact(None, "members", None));
    }

    #[test]
    fn entra_string_booleans_are_coerced() {
        let def = ResourceKind::User.core_attribute("active").unwrap();
        assert_eq!(coerce_scalar(def, json!("False")).unwrap(), json!(false));
        assert_eq!(coerce_scalar(def, json!("TRUE")).unwrap(), json!(true));
        assert!(coerce_scalar(def, json!("nope")).is_err());
        assert!(coerce_scalar(def, json!(1)).is_err());
    }

    #[test]
    fn schema_documents_describe_every_attribute() {
        let docs = all_schema_documents("https://x/scim/v2");
        assert_eq!(docs.len(), 3);
        let user = &docs[0];
        assert_eq!(user["id"], USER_URN);
        let names: Vec<&str> =
            user["attributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"userName"));
        assert!(names.contains(&"emails"));
        let rt = ResourceKind::User.resource_type_document("https://x");
        assert_eq!(rt["schemaExtensions"][0]["schema"], ENTERPRISE_USER_URN);
    }
}
