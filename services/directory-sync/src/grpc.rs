//! The gRPC face of directory-sync: thin handlers that translate, call
//! [`DirectorySync`], and map errors.

use std::pin::Pin;

use futures::Stream;
use muster_proto::directory::v1 as pb;
use muster_proto::directory::v1::directory_service_server::DirectoryService;
use tonic::{Request, Response, Status};

use crate::app::{DirectorySync, actor_name};
use crate::convert;
use crate::domain::directory::{Kind, State};
use crate::error::SyncError;
use crate::store::SyncStore;

/// Serves `muster.directory.v1.DirectoryService`.
#[derive(Debug)]
pub struct DirectoryGrpc {
    app: DirectorySync,
}

impl DirectoryGrpc {
    /// Handlers over `app`.
    pub fn new(app: DirectorySync) -> Self {
        Self { app }
    }

    fn dir_pb(&self, d: crate::domain::directory::Directory) -> pb::Directory {
        let url = self.app.scim_url(&d);
        convert::directory_pb(d, url)
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::SyncProgress, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::DirectoryEvent, Status>> + Send>>;

#[tonic::async_trait]
impl DirectoryService for DirectoryGrpc {
    async fn create_directory(
        &self,
        r: Request<pb::CreateDirectoryRequest>,
    ) -> Result<Response<pb::CreateDirectoryResponse>, Status> {
        let r = r.into_inner();
        let kind = convert::kind(r.kind, &r.kind_name)?;
        let brake = convert::brake(r.brake.as_ref())?;
        let (d, token) = self
            .app
            .create(
                &r.parent_id,
                kind,
                &r.display_name,
                &r.config_json,
                r.sync_interval_seconds,
                brake,
                r.scim_log_days,
                &actor_name(r.actor.as_ref()),
            )
            .await?;
        Ok(Response::new(pb::CreateDirectoryResponse {
            directory: Some(self.dir_pb(d)),
            scim_token: token.unwrap_or_default(),
        }))
    }

    async fn get_directory(&self, r: Request<pb::GetDirectoryRequest>) -> Result<Response<pb::Directory>, Status> {
        Ok(Response::new(self.dir_pb(self.app.get(&r.into_inner().id).await?)))
    }

    async fn list_directories(
        &self,
        r: Request<pb::ListDirectoriesRequest>,
    ) -> Result<Response<pb::ListDirectoriesResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.list(&r.parent_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDirectoriesResponse {
            directories: page.items.into_iter().map(|d| self.dir_pb(d)).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn update_directory(
        &self,
        r: Request<pb::UpdateDirectoryRequest>,
    ) -> Result<Response<pb::Directory>, Status> {
        let r = r.into_inner();
        let brake = r.brake.as_ref().map(|b| convert::brake(Some(b))).transpose()?;
        let d = self
            .app
            .update(
                &r.id,
                r.display_name.as_deref(),
                r.config_json.as_deref(),
                r.sync_interval_seconds,
                brake,
                r.scim_log_days,
                &actor_name(r.actor.as_ref()),
            )
            .await?;
        Ok(Response::new(self.dir_pb(d)))
    }

    async fn delete_directory(
        &self,
        r: Request<pb::DeleteDirectoryRequest>,
    ) -> Result<Response<pb::DeleteDirectoryResponse>, Status> {
        let r = r.into_inner();
        self.app.delete(&r.id, &actor_name(r.actor.as_ref())).await?;
        Ok(Response::new(pb::DeleteDirectoryResponse {}))
    }

    async fn pause_directory(&self, r: Request<pb::PauseDirectoryRequest>) -> Result<Response<pb::Directory>, Status> {
        let r = r.into_inner();
        Ok(Response::new(self.dir_pb(self.app.set_state(&r.id, State::Paused, &actor_name(r.actor.as_ref())).await?)))
    }

    async fn resume_directory(
        &self,
        r: Request<pb::ResumeDirectoryRequest>,
    ) -> Result<Response<pb::Directory>, Status> {
        let r = r.into_inner();
        Ok(Response::new(self.dir_pb(self.app.set_state(&r.id, State::Active, &actor_name(r.actor.as_ref())).await?)))
    }

    async fn rotate_scim_token(
        &self,
        r: Request<pb::RotateScimTokenRequest>,
    ) -> Result<Response<pb::RotateScimTokenResponse>, Status> {
        let r = r.into_inner();
        let (d, token) = self.app.rotate_token(&r.id, &actor_name(r.actor.as_ref())).await?;
        Ok(Response::new(pb::RotateScimTokenResponse { scim_token: token, scim_base_url: self.app.scim_url(&d) }))
    }

    async fn test_directory(
        &self,
        r: Request<pb::TestDirectoryRequest>,
    ) -> Result<Response<pb::TestDirectoryResponse>, Status> {
        let (d, answer) = self.app.test_directory(&r.into_inner().id).await?;
        Ok(Response::new(pb::TestDirectoryResponse {
            ok: answer.ok,
            message: answer.message,
            problem: answer.problem.to_string(),
            kind: convert::kind_pb(d.kind) as i32,
            kind_name: d.kind.name().to_string(),
        }))
    }

    async fn list_directory_kinds(
        &self,
        _r: Request<pb::ListDirectoryKindsRequest>,
    ) -> Result<Response<pb::ListDirectoryKindsResponse>, Status> {
        Ok(Response::new(pb::ListDirectoryKindsResponse { kinds: Kind::all().map(convert::kind_info_pb).collect() }))
    }

    async fn get_directory_status(
        &self,
        r: Request<pb::GetDirectoryStatusRequest>,
    ) -> Result<Response<pb::DirectoryStatus>, Status> {
        let s = self.app.status(&r.into_inner().id).await?;
        let url = self.app.scim_url(&s.directory);
        Ok(Response::new(convert::status_pb(s, url)))
    }

    async fn list_directory_users(
        &self,
        r: Request<pb::ListDirectoryUsersRequest>,
    ) -> Result<Response<pb::ListDirectoryUsersResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.users(&r.directory_id, &r.prefix, r.active, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDirectoryUsersResponse {
            users: page.items.into_iter().map(convert::user_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn list_directory_groups(
        &self,
        r: Request<pb::ListDirectoryGroupsRequest>,
    ) -> Result<Response<pb::ListDirectoryGroupsResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.groups(&r.directory_id, &r.prefix, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDirectoryGroupsResponse {
            groups: page.items.into_iter().map(convert::group_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn get_directory_user(
        &self,
        r: Request<pb::GetDirectoryUserRequest>,
    ) -> Result<Response<pb::DirectoryUserDetail>, Status> {
        let r = r.into_inner();
        let (user, groups) = self.app.user(&r.directory_id, &r.user_id).await?;
        Ok(Response::new(pb::DirectoryUserDetail {
            user: Some(convert::user_pb(user)),
            groups: convert::group_refs(groups),
        }))
    }

    type SyncNowStream = ProgressStream;

    async fn sync_now(&self, r: Request<pb::SyncNowRequest>) -> Result<Response<Self::SyncNowStream>, Status> {
        let r = r.into_inner();
        let actor = actor_name(r.actor.as_ref());
        let run = self.app.sync_now(&r.directory_id, &actor).await?;
        let first = pb::SyncProgress { run: Some(convert::run_pb(run.clone())), done: !r.wait };
        if !r.wait {
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(first)]))));
        }
        let engine = self.app.engine.clone();
        let mut changes = engine.run_changes();
        let run_id = run.id;
        let stream = async_stream(move |tx| async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let run = match engine.store.get_run(&run_id).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let done = run.state.is_settled();
                if tx.send(Ok(pb::SyncProgress { run: Some(convert::run_pb(run)), done })).await.is_err() || done {
                    return;
                }
                // A joined run may be saved by another task; a tick bounds the wait.
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_sync_runs(
        &self,
        r: Request<pb::ListSyncRunsRequest>,
    ) -> Result<Response<pb::ListSyncRunsResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.runs(&r.directory_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListSyncRunsResponse {
            runs: page.items.into_iter().map(convert::run_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn get_sync_run(&self, r: Request<pb::GetSyncRunRequest>) -> Result<Response<pb::SyncRun>, Status> {
        Ok(Response::new(convert::run_view_pb(self.app.run(&r.into_inner().run_id).await?)))
    }

    async fn approve_run(&self, r: Request<pb::ApproveRunRequest>) -> Result<Response<pb::SyncRun>, Status> {
        let r = r.into_inner();
        let run = self.app.approve(&r.run_id, &actor_name(r.actor.as_ref())).await?;
        Ok(Response::new(convert::run_pb(run)))
    }

    async fn reject_run(&self, r: Request<pb::RejectRunRequest>) -> Result<Response<pb::SyncRun>, Status> {
        let r = r.into_inner();
        let run = self.app.reject(&r.run_id, &actor_name(r.actor.as_ref())).await?;
        Ok(Response::new(convert::run_pb(run)))
    }

    async fn preview_settings(
        &self,
        r: Request<pb::PreviewSettingsRequest>,
    ) -> Result<Response<pb::PreviewSettingsResponse>, Status> {
        let r = r.into_inner();
        let settings =
            r.settings.ok_or_else(|| SyncError::invalid("settings_required", "settings", "settings are required"))?;
        let acting = crate::engine::Acting {
            member_id: r.acting_member_id,
            name: match r.actor.and_then(|a| a.kind) {
                Some(muster_proto::common::v1::actor::Kind::AdminId(id)) => id,
                _ => String::new(),
            },
        };
        Ok(Response::new(self.app.preview(&r.org_id, settings, acting).await?))
    }

    async fn get_reconcile_lag(
        &self,
        r: Request<pb::GetReconcileLagRequest>,
    ) -> Result<Response<pb::ReconcileLag>, Status> {
        let (queued, oldest) = self.app.lag(&r.into_inner().directory_id).await?;
        let lag = oldest.map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0);
        Ok(Response::new(pb::ReconcileLag { queued, oldest_enqueue_time: oldest.map(convert::ts), lag_seconds: lag }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        r: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = r.into_inner();
        if r.after_sequence < 0 {
            return Err(SyncError::invalid(
                "sequence_negative",
                "after_sequence",
                "after_sequence must not be negative",
            )
            .into());
        }
        let store = self.app.engine.store.clone();
        let mut changes = store.event_changes();
        let directory = (!r.directory_id.is_empty()).then_some(r.directory_id);
        let mut cursor = r.after_sequence;
        let stream = async_stream(move |tx| async move {
            loop {
                // Mark the channel seen before reading, so a commit after the read wakes us.
                changes.borrow_and_update();
                let batch = match store.events_after(cursor, directory.clone(), 500).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let full = batch.len() == 500;
                for e in batch {
                    cursor = e.seq;
                    if tx.send(Ok(convert::event_pb(e))).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                // Writes in this process wake us at once; another replica's within a second.
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn set_directory_authority(
        &self,
        r: Request<pb::SetDirectoryAuthorityRequest>,
    ) -> Result<Response<pb::SetDirectoryAuthorityResponse>, Status> {
        let r = r.into_inner();
        let authority = convert::authority(r.authority)?;
        let (d, orgs, run) = self.app.set_authority(&r.id, authority, r.dry_run, &actor_name(r.actor.as_ref())).await?;
        Ok(Response::new(pb::SetDirectoryAuthorityResponse {
            directory: Some(self.dir_pb(d)),
            orgs,
            run_id: run.unwrap_or_default(),
        }))
    }

    async fn list_directory_audit(
        &self,
        r: Request<pb::ListDirectoryAuditRequest>,
    ) -> Result<Response<pb::ListDirectoryAuditResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.audit(&r.directory_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDirectoryAuditResponse {
            entries: page.items.into_iter().map(convert::audit_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn list_scim_requests(
        &self,
        r: Request<pb::ListScimRequestsRequest>,
    ) -> Result<Response<pb::ListScimRequestsResponse>, Status> {
        let r = r.into_inner();
        let page = self.app.scim_requests(&r.directory_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListScimRequestsResponse {
            requests: page.items.into_iter().map(convert::scim_request_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }
}

/// A stream fed by a task through a small channel (back-pressure: the task waits for
/// the client).
fn async_stream<T, F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
