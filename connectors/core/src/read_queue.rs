//! [`ReadQueue`]: a connector's reads (one page each, say) running a bounded
//! number at a time, answered as they complete.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

/// Reads run at most `limit` at a time, started in the order queued,
/// answered in the order they complete. A queued read does nothing until it
/// starts (a future is lazy), so queueing a whole page of groups costs
/// nothing; only `limit` answers are ever held. A chain of pages queues its
/// next page when the previous one is answered, so one chain stays in order
/// while different chains overlap.
pub struct ReadQueue<'a, T> {
    queued: VecDeque<BoxFuture<'a, T>>,
    running: FuturesUnordered<BoxFuture<'a, T>>,
    limit: usize,
}

impl<T> std::fmt::Debug for ReadQueue<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadQueue")
            .field("queued", &self.queued.len())
            .field("running", &self.running.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<'a, T> ReadQueue<'a, T> {
    pub fn new(limit: usize) -> Self {
        Self { queued: VecDeque::new(), running: FuturesUnordered::new(), limit: limit.max(1) }
    }

    /// Queues a read behind those already queued.
    pub fn push(&mut self, read: BoxFuture<'a, T>) {
        self.queued.push_back(read);
    }

    /// The next read to complete (starting queued ones while fewer than
    /// `limit` run); None when none is left.
    pub async fn next(&mut self) -> Option<T> {
        while self.running.len() < self.limit
            && let Some(read) = self.queued.pop_front()
        {
            self.running.push(read);
        }
        self.running.next().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn at_most_limit_run_and_every_read_is_answered() {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut queue = ReadQueue::new(3);
        for i in 0..10u64 {
            let (now, most) = (now.clone(), most.clone());
            queue.push(Box::pin(async move {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10 - i)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }));
        }
        let mut answered = Vec::new();
        while let Some(i) = queue.next().await {
            answered.push(i);
        }
        answered.sort();
        assert_eq!(answered, (0..10).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert!(ReadQueue::<u8>::new(0).next().await.is_none());
    }
}
