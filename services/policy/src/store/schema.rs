//! Diesel table definitions; they mirror `migrations/{sqlite,postgres}`.

diesel::table! {
    parent_orgs (id) {
        id -> Text,
        name -> Text,
        kind -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    orgs (id) {
        id -> Text,
        parent_id -> Text,
        name -> Text,
        product -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    org_settings (org_id) {
        org_id -> Text,
        version -> BigInt,
        mode -> Text,
        advanced_group_mapping -> Bool,
        role_mappings -> Text,
        seat_tier_mappings -> Text,
        updated_by -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    settings_history (org_id, version) {
        org_id -> Text,
        version -> BigInt,
        mode -> Text,
        advanced_group_mapping -> Bool,
        role_mappings -> Text,
        seat_tier_mappings -> Text,
        updated_by -> Text,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(orgs -> parent_orgs (parent_id));
diesel::allow_tables_to_appear_in_same_query!(parent_orgs, orgs, org_settings, settings_history);
