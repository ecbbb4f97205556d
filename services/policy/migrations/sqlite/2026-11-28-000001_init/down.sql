DROP TABLE settings_history;
DROP TABLE org_settings;
DROP TABLE orgs;
DROP TABLE parent_orgs;
