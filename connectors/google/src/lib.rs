//! Google Workspace pull connector: users, groups and members by the Admin SDK Directory API.
