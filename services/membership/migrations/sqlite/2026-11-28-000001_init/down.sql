DROP TABLE apply_keys;
DROP TABLE member_events;
DROP TABLE audit_log;
DROP TABLE seats;
DROP TABLE members;
DROP TABLE identity_links;
DROP TABLE users;
