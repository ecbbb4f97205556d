//! Diesel table definitions; they mirror `migrations/{sqlite,postgres}`.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        display_name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    identity_links (directory_id, external_id) {
        directory_id -> Text,
        external_id -> Text,
        user_id -> Text,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
    }
}

diesel::table! {
    members (id) {
        id -> Text,
        org_id -> Text,
        user_id -> Text,
        role -> Text,
        seat_tier -> Nullable<Text>,
        wanted_seat_tier -> Nullable<Text>,
        status -> Text,
        source -> Text,
        directory_id -> Nullable<Text>,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        waiting_since -> Nullable<Timestamp>,
    }
}

diesel::table! {
    seats (org_id, seat_tier) {
        org_id -> Text,
        seat_tier -> Text,
        purchased -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        org_id -> Text,
        user_id -> Text,
        member_id -> Text,
        action -> Text,
        actor -> Text,
        reasons -> Text,
        before_json -> Text,
        after_json -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    member_events (sequence) {
        sequence -> BigInt,
        event_type -> Text,
        org_id -> Text,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    apply_keys (org_id, idempotency_key) {
        org_id -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        response_hex -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(members -> users (user_id));
diesel::joinable!(identity_links -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    identity_links,
    members,
    seats,
    audit_log,
    member_events,
    apply_keys
);
