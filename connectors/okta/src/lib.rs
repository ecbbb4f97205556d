//! Okta pull connector: users, groups and app assignments by the Okta management API and System Log.
