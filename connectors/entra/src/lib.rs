//! Microsoft Entra ID pull connector: users and groups by Microsoft Graph delta queries.
