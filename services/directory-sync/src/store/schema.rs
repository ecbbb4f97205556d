//! Diesel table definitions; they mirror `migrations/{sqlite,postgres}`.

diesel::table! {
    directories (id) {
        id -> Text,
        parent_id -> Text,
        kind -> Text,
        display_name -> Text,
        config_json -> Text,
        sync_interval_secs -> BigInt,
        brake_percent -> Integer,
        brake_min -> Integer,
        state -> Text,
        scim_token_hash -> Nullable<Text>,
        last_error -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        scim_log_days -> Integer,
        authority -> Text,
        brake_window_secs -> BigInt,
    }
}

diesel::table! {
    dir_users (id) {
        id -> Text,
        directory_id -> Text,
        user_name -> Text,
        user_name_lower -> Text,
        external_id -> Nullable<Text>,
        email_lower -> Nullable<Text>,
        display_name -> Text,
        active -> Bool,
        attributes_json -> Text,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        content_hash -> Nullable<Text>,
        seen_generation -> BigInt,
    }
}

diesel::table! {
    dir_user_emails (user_id, email_lower) {
        user_id -> Text,
        directory_id -> Text,
        email_lower -> Text,
    }
}

diesel::table! {
    dir_groups (id) {
        id -> Text,
        directory_id -> Text,
        display_name -> Text,
        display_name_lower -> Text,
        external_id -> Nullable<Text>,
        attributes_json -> Text,
        member_count -> BigInt,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        content_hash -> Nullable<Text>,
        seen_generation -> BigInt,
    }
}

diesel::table! {
    dir_members (group_id, member_id) {
        group_id -> Text,
        member_id -> Text,
        member_kind -> Text,
        display -> Nullable<Text>,
        seen_generation -> BigInt,
    }
}

diesel::table! {
    reconcile_queue (seq) {
        seq -> BigInt,
        directory_id -> Text,
        user_id -> Text,
        email -> Text,
        display_name -> Text,
        enqueued_at -> Timestamp,
    }
}

diesel::table! {
    dir_events (seq) {
        seq -> BigInt,
        id -> Text,
        directory_id -> Text,
        event_type -> Text,
        resource_id -> Text,
        member_id -> Text,
        data_json -> Text,
        previous_json -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sync_runs (id) {
        id -> Text,
        directory_id -> Text,
        run_trigger -> Text,
        state -> Text,
        orgs_json -> Text,
        outcome -> Text,
        error -> Text,
        processed -> BigInt,
        total -> BigInt,
        actor -> Text,
        decided_by -> Text,
        started_at -> Timestamp,
        ended_at -> Nullable<Timestamp>,
        heartbeat_at -> Nullable<Timestamp>,
        phase -> Text,
        held_listing -> Nullable<BigInt>,
    }
}

diesel::table! {
    run_owners (run_id) {
        run_id -> Text,
        owner -> Text,
    }
}

diesel::table! {
    run_items (run_id, seq) {
        run_id -> Text,
        seq -> BigInt,
        org_id -> Text,
        user_ref -> Text,
        email -> Text,
        display_name -> Text,
        kind -> Text,
        detail -> Text,
        member_id -> Text,
    }
}

diesel::table! {
    org_watch (directory_id, org_id) {
        directory_id -> Text,
        org_id -> Text,
        settings_version -> BigInt,
    }
}

diesel::table! {
    pull_state (directory_id) {
        directory_id -> Text,
        cursor -> Nullable<Text>,
        listing_generation -> BigInt,
        last_full_listing -> Nullable<Timestamp>,
        last_success -> Nullable<Timestamp>,
        next_pull_at -> Timestamp,
        failures -> Integer,
        lease_holder -> Nullable<Text>,
        lease_expires -> Nullable<Timestamp>,
    }
}

diesel::table! {
    scim_requests (id) {
        id -> Text,
        directory_id -> Text,
        received_at -> Timestamp,
        method -> Text,
        path -> Text,
        request_headers -> Text,
        request_body -> Text,
        request_truncated -> Bool,
        status -> Integer,
        response_body -> Text,
        response_truncated -> Bool,
        duration_us -> BigInt,
    }
}

diesel::table! {
    directory_audit (seq) {
        seq -> BigInt,
        directory_id -> Text,
        action -> Text,
        actor -> Text,
        before_json -> Text,
        after_json -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    removal_log (seq) {
        seq -> BigInt,
        org_id -> Text,
        run_id -> Text,
        removed -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    org_holds (org_id) {
        org_id -> Text,
        run_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    reconcile_leases (parent_id) {
        parent_id -> Text,
        holder -> Text,
        expires -> Timestamp,
    }
}

diesel::joinable!(dir_members -> dir_groups (group_id));
diesel::allow_tables_to_appear_in_same_query!(
    directories,
    dir_users,
    dir_user_emails,
    dir_groups,
    dir_members,
    reconcile_queue,
    dir_events,
    sync_runs,
    run_items,
    org_watch,
    pull_state,
    scim_requests,
    directory_audit,
    removal_log,
    org_holds,
    reconcile_leases
);
