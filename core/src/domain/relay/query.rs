//! `forwardQueryByPage.action`: its parameters, the filter and the pager (seed 001, "Task Query").
//!
//! Decisions: query parameters other than the ones below (`n`, `r`, `k`, cache-busters) are
//! ignored, unlike unknown body fields, since proxies and HTTP clients add their own; an empty
//! value counts as absent; a malformed `id` is refused rather than matching nothing, so a client
//! bug shows.

use serde::Serialize;

use super::events::{QueryItem, TimeFormat};
use super::task::RelayTask;
use super::types::{parse_digits, TaskId, MAX_URL_LEN};
use crate::domain::error::RequestError;

/// The largest (and default) page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The parameters of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParams {
    /// Which tasks.
    pub filter: QueryFilter,
    /// 1-based page number (default 1).
    pub page_no: u32,
    /// Items per page, 1..=100 (default 100; a larger `pageSize` is capped at 100).
    pub page_size: u32,
}

/// Which tasks a query matches: every criterion given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    /// Exactly this id.
    pub id: Option<TaskId>,
    /// A source URL containing this.
    pub src: Option<String>,
    /// A destination URL containing this.
    pub forward: Option<String>,
}

impl QueryFilter {
    /// Whether `task` matches.
    pub fn matches(&self, task: &RelayTask) -> bool {
        self.id.as_ref().is_none_or(|id| &task.id == id)
            && self
                .src
                .as_deref()
                .is_none_or(|s| task.sources.iter().any(|x| x.url.as_str().contains(s)))
            && self
                .forward
                .as_deref()
                .is_none_or(|f| task.destinations.iter().any(|d| d.url.as_str().contains(f)))
    }
}

impl QueryParams {
    /// From a raw query string (`a=b&c=d`, percent-decoded here).
    pub fn parse_query_string(query: &str) -> Result<Self, RequestError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Self::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From decoded `(name, value)` pairs; the first of a repeated name counts.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RequestError> {
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty())
        };
        let text = |name: &str| -> Result<Option<String>, RequestError> {
            match get(name) {
                Some(v) if v.len() > MAX_URL_LEN => Err(RequestError::field(name)),
                v => Ok(v.map(str::to_string)),
            }
        };
        let filter = QueryFilter {
            id: get("id").map(TaskId::parse).transpose()?,
            src: text("src")?,
            forward: text("forward")?,
        };
        if filter.id.is_none() && filter.src.is_none() && filter.forward.is_none() {
            return Err(RequestError::QueryCriteriaMissing);
        }
        let page_no = match get("pageNo") {
            None => 1,
            Some(v) => parse_digits(v, 7)
                .filter(|n| (1..=1_000_000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| RequestError::field("pageNo"))?,
        };
        let page_size = match get("pageSize") {
            None => MAX_PAGE_SIZE,
            Some(v) => parse_page_size(v).ok_or_else(|| RequestError::field("pageSize"))?,
        };
        Ok(Self {
            filter,
            page_no,
            page_size,
        })
    }
}

/// A `pageSize`: decimal digits worth at least 1; above [`MAX_PAGE_SIZE`] it is capped there
/// (the seed: "default 100, max 100"), however many digits it has.
fn parse_page_size(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = v.trim_start_matches('0');
    if significant.is_empty() {
        return None;
    }
    // More than 7 significant digits is far above the cap; do not parse what may overflow.
    Some(
        parse_digits(significant, 7)
            .map_or(MAX_PAGE_SIZE, |n| n.min(u64::from(MAX_PAGE_SIZE)) as u32),
    )
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryPage<T> {
    /// How many items match in all.
    pub total: usize,
    /// This page's number.
    #[serde(rename = "pageNo")]
    pub page_no: u32,
    /// The page size used: the one asked for, capped at [`MAX_PAGE_SIZE`].
    #[serde(rename = "pageSize")]
    pub page_size: u32,
    /// The items of this page.
    pub list: Vec<T>,
}

/// The `page_no`-th page (1-based) of `page_size` items; past the end, an empty list.
pub fn paginate<T>(items: Vec<T>, page_no: u32, page_size: u32) -> QueryPage<T> {
    let total = items.len();
    let skip = (page_no.max(1) as usize - 1).saturating_mul(page_size as usize);
    let list = items
        .into_iter()
        .skip(skip)
        .take(page_size as usize)
        .collect();
    QueryPage {
        total,
        page_no,
        page_size,
        list,
    }
}

/// The whole query over `tasks` (an account's): filter, newest first (then by id, so pages are
/// stable), page, render. The result serializes to the seed's `{total, pageNo, pageSize, list}`.
pub fn run_query<'a>(
    tasks: impl IntoIterator<Item = &'a RelayTask>,
    params: &QueryParams,
    tf: &TimeFormat,
) -> QueryPage<QueryItem> {
    let mut hits: Vec<&RelayTask> = tasks
        .into_iter()
        .filter(|t| params.filter.matches(t))
        .collect();
    hits.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    let page = paginate(hits, params.page_no, params.page_size);
    QueryPage {
        total: page.total,
        page_no: page.page_no,
        page_size: page.page_size,
        list: page
            .list
            .into_iter()
            .map(|t| QueryItem::from_task(t, tf))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::relay::types::{ExtendParam, Fops, RtmpUrl, Source, SourceUrl, TaskType};
    use crate::domain::relay::wire::NewRelayTask;

    fn task(id: &str, src: &str, fwd: &str, created: i64) -> RelayTask {
        let n = NewRelayTask {
            id: TaskId::parse(id).unwrap(),
            sources: vec![Source::new(SourceUrl::parse(src, TaskType::Live).unwrap())],
            forwards: vec![RtmpUrl::parse(fwd).unwrap()],
            start_ms: None,
            end_ms: None,
            fops: Fops::default(),
            extend: ExtendParam::default(),
        };
        RelayTask::create("acc", TaskType::Live, None, n, created)
    }

    #[test]
    fn at_least_one_criterion_is_required() {
        assert_eq!(
            QueryParams::parse_query_string("n=a&r=1&k=x"),
            Err(RequestError::QueryCriteriaMissing)
        );
        assert_eq!(
            QueryParams::parse_query_string("id=&src=")
                .unwrap_err()
                .msg(),
            "params id, src, forward not exist or empty"
        );
        let p = QueryParams::parse_query_string(
            "n=test&r=1741165183&k=a6edsa3c30d64e172b52136ba493ad1f&id=task_unique_id_001",
        )
        .unwrap();
        assert_eq!(
            (
                p.filter.id.as_ref().map(TaskId::as_str),
                p.page_no,
                p.page_size
            ),
            (Some("task_unique_id_001"), 1, 100)
        );
    }

    #[test]
    fn paging_parameters_are_bounded() {
        let p = QueryParams::parse_query_string("src=live&pageNo=3&pageSize=10").unwrap();
        assert_eq!((p.page_no, p.page_size), (3, 10));
        for (q, field) in [
            ("src=a&pageNo=0", "pageNo"),
            ("src=a&pageNo=-1", "pageNo"),
            ("src=a&pageSize=0", "pageSize"),
            ("src=a&pageSize=000", "pageSize"),
            ("src=a&pageSize=-1", "pageSize"),
            ("src=a&pageSize=-500", "pageSize"),
            ("src=a&pageSize=1e2", "pageSize"),
            ("src=a&pageSize=ten", "pageSize"),
            ("src=a&pageSize=%2010", "pageSize"),
            ("src=a&pageSize=500.0", "pageSize"),
            ("id=a%3Ab", "id"),
        ] {
            assert_eq!(
                QueryParams::parse_query_string(q).unwrap_err().msg(),
                format!("params {field} format is error"),
                "{q}"
            );
        }
        // Above the maximum, pageSize is capped at 100 (the seed: default 100, max 100).
        for (size, want) in [
            ("1", 1),
            ("007", 7),
            ("100", 100),
            ("101", 100),
            ("500", 100),
            ("99999999", 100),
            ("184467440737095516160000", 100),
        ] {
            let p = QueryParams::parse_query_string(&format!("src=a&pageSize={size}")).unwrap();
            assert_eq!(p.page_size, want, "pageSize={size}");
        }
        // Percent-decoding happens before matching.
        let p = QueryParams::parse_query_string("forward=rtmp%3A%2F%2F127.0.0.1").unwrap();
        assert_eq!(p.filter.forward.as_deref(), Some("rtmp://127.0.0.1"));
    }

    #[test]
    fn the_filter_matches_id_exactly_and_urls_by_substring() {
        let t = task(
            "task_1",
            "http://source.example.com/live/stream1.flv",
            "rtmp://127.0.0.1:1935/live/output1",
            1,
        );
        let f = |id: Option<&str>, src: Option<&str>, fwd: Option<&str>| QueryFilter {
            id: id.map(|i| TaskId::parse(i).unwrap()),
            src: src.map(str::to_string),
            forward: fwd.map(str::to_string),
        };
        assert!(f(Some("task_1"), None, None).matches(&t));
        assert!(
            !f(Some("task_"), None, None).matches(&t),
            "ids match exactly"
        );
        assert!(f(None, Some("stream1"), None).matches(&t));
        assert!(f(None, None, Some("output1")).matches(&t));
        assert!(
            !f(None, Some("stream1"), Some("output2")).matches(&t),
            "every criterion must hold"
        );
        assert!(
            !f(None, Some("output1"), None).matches(&t),
            "src matches sources only"
        );
    }

    #[test]
    fn pages_are_stable_and_newest_first() {
        let tasks: Vec<RelayTask> = (0..250)
            .map(|i| {
                task(
                    &format!("t{i:03}"),
                    "rtmp://src/live/a",
                    "rtmp://d/live/x",
                    i,
                )
            })
            .collect();
        let params = |no, size| QueryParams {
            filter: QueryFilter {
                src: Some("src".into()),
                ..Default::default()
            },
            page_no: no,
            page_size: size,
        };
        let p1 = run_query(&tasks, &params(1, 100), &TimeFormat::default());
        assert_eq!(
            (p1.total, p1.list.len(), p1.list[0].id.as_str()),
            (250, 100, "t249")
        );
        let p3 = run_query(&tasks, &params(3, 100), &TimeFormat::default());
        assert_eq!((p3.list.len(), p3.list[49].id.as_str()), (50, "t000"));
        assert!(run_query(&tasks, &params(4, 100), &TimeFormat::default())
            .list
            .is_empty());
        let v =
            serde_json::to_value(run_query(&tasks, &params(1, 1), &TimeFormat::default())).unwrap();
        assert_eq!(
            (
                v["total"].as_u64(),
                v["pageNo"].as_u64(),
                v["pageSize"].as_u64()
            ),
            (Some(250), Some(1), Some(1))
        );
        assert_eq!(paginate(vec![1, 2, 3], 2, 2).list, vec![3]);
        assert_eq!(
            paginate(Vec::<u8>::new(), 1_000_000, 100).list,
            Vec::<u8>::new()
        );
    }
}
