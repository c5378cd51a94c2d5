//! `infra/relaycast.yaml`, the AWS data layer: valid CloudFormation (cfn-lint), and naming the
//! queues the code uses.

use std::path::{Path, PathBuf};
use std::process::Command;

fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("infra")
        .join("relaycast.yaml")
}

/// cfn-lint is a test peer like ffmpeg: a missing one fails the test (see
/// `relaycast_workers::test_peers`), `scripts/install-deps.sh test` installs it.
#[test]
fn template_passes_cfn_lint() {
    relaycast_workers::require_peers!(CfnLint);
    let template = template();
    let output = Command::new("cfn-lint")
        .arg("--")
        .arg(&template)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run cfn-lint: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cfn-lint {} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        template.display(),
        output.status
    );
}

#[test]
fn template_has_the_queues_indexes_and_table_settings_the_code_uses() {
    let text = std::fs::read_to_string(template()).unwrap();
    let queues = [
        relaycast_core::app::relay::RELAY_QUEUE,
        relaycast_core::app::recording::RECORD_QUEUE,
        relaycast_core::domain::recording::OBJECT_NOTICE_QUEUE,
        relaycast_core::domain::outbox::CALLBACK_QUEUE,
    ];
    for queue in queues {
        assert!(
            relaycast::http::OBSERVED_QUEUES.contains(&queue),
            "{queue} is not observed"
        );
    }
    for queue in relaycast::http::OBSERVED_QUEUES {
        let dlq = relaycast_core::ports::dead_letter_queue(queue);
        for name in [queue.to_string(), dlq] {
            assert!(
                text.contains(&format!("QueueName: !Sub \"${{NamePrefix}}-{name}\"")),
                "no queue {name}"
            );
        }
    }
    let redrives = text.matches("maxReceiveCount: 5").count();
    assert_eq!(
        redrives,
        relaycast::http::OBSERVED_QUEUES.len(),
        "one redrive policy per queue"
    );
    for needle in [
        "BillingMode: PAY_PER_REQUEST",
        "IndexName: records_by_account",
        "IndexName: records_by_status",
        "IndexName: records_by_time",
        "PointInTimeRecoveryEnabled: true",
        "AttributeName: expires_at\n        Enabled: true",
        "BlockPublicAcls: true",
        "RestrictPublicBuckets: true",
        "SSEAlgorithm: AES256",
        "NamePrefix:",
    ] {
        assert!(text.contains(needle), "{needle:?} not in the template");
    }
}

/// The template's resources: name and the lines of its block (what follows `  Name:` up to the
/// next resource or top-level key). Enough YAML for the checks below, which read properties
/// the template writes one per line.
fn resources(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            inside = line == "Resources:";
            continue;
        }
        if !inside {
            continue;
        }
        let is_resource = line.len() > 2
            && line.starts_with("  ")
            && !line[2..].starts_with([' ', '#'])
            && line.ends_with(':');
        if is_resource {
            out.push((line.trim().trim_end_matches(':').to_string(), Vec::new()));
        } else if let Some((_, block)) = out.last_mut() {
            block.push(line.to_string());
        }
    }
    out
}

/// The values of `key: value` lines in `block`, comments cut off.
fn props<'a>(block: &'a [String], key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    block
        .iter()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            let value = l.strip_prefix(&prefix)?;
            Some(value.split(" #").next().unwrap_or("").trim())
        })
        .collect()
}

fn prop<'a>(block: &'a [String], key: &str) -> Option<&'a str> {
    props(block, key).into_iter().next()
}

fn of_type<'a>(
    resources: &'a [(String, Vec<String>)],
    kind: &str,
) -> Vec<&'a (String, Vec<String>)> {
    resources
        .iter()
        .filter(|(_, block)| prop(block, "Type") == Some(kind))
        .collect()
}

fn find<'a>(resources: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    &resources
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no resource {name}"))
        .1
}

/// The bins each workspace package builds, from `cargo metadata` (explicit `[[bin]]` entries
/// and `src/bin/*.rs` alike).
fn bins_of(package: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The bin a function's `CodeUri` names: `../target/lambda/<bin>/bootstrap.zip`.
fn function_bin(block: &[String]) -> String {
    let uri = prop(block, "CodeUri").expect("a function names its CodeUri");
    uri.strip_prefix("../target/lambda/")
        .and_then(|rest| rest.strip_suffix("/bootstrap.zip"))
        .unwrap_or_else(|| panic!("CodeUri {uri} is not a zip of scripts/build-aws.sh"))
        .to_string()
}

#[test]
fn every_function_the_template_deploys_is_a_bin_and_every_bin_is_deployed() {
    let text = std::fs::read_to_string(template()).unwrap();
    let resources = resources(&text);

    let mut deployed: Vec<String> = of_type(&resources, "AWS::Serverless::Function")
        .iter()
        .map(|(_, block)| function_bin(block))
        .collect();
    deployed.sort();
    let mut bins = bins_of("relaycast-functions");
    bins.sort();
    assert_eq!(
        deployed, bins,
        "the template's functions (left) and relaycast-functions' bins (right) differ"
    );
    for name in [
        "relaycast-api",
        "relaycast-callbacks",
        "relaycast-notifier",
        "relaycast-recordings",
        "relaycast-scheduler",
    ] {
        assert!(deployed.contains(&name.to_string()), "no function {name}");
    }
    let globals = &text[text.find("Globals:").unwrap()..text.find("Resources:").unwrap()];
    for needle in [
        "Runtime: provided.al2023",
        "Architectures: [x86_64]",
        "Handler: bootstrap",
    ] {
        assert!(globals.contains(needle), "Globals lack {needle:?}");
    }
}

#[test]
fn every_worker_the_template_runs_is_a_bin_the_image_holds() {
    let text = std::fs::read_to_string(template()).unwrap();
    let resources = resources(&text);
    let workers = bins_of("relaycast-workers");
    let entrypoint = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/worker-entrypoint.sh"),
    )
    .unwrap();
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/Dockerfile"))
            .unwrap();
    let tasks = of_type(&resources, "AWS::ECS::TaskDefinition");
    assert_eq!(tasks.len(), 2, "a task definition per worker");
    for (name, block) in tasks {
        let command = prop(block, "Command").expect("the container names its worker");
        let worker = command.trim_matches(['[', ']']).trim();
        assert!(
            workers.iter().any(|b| b == worker),
            "{name} runs {worker}, which relaycast-workers does not build"
        );
        assert!(
            entrypoint.contains(&format!("{worker} |"))
                || entrypoint.contains(&format!("| {worker}")),
            "infra/worker-entrypoint.sh does not run {worker}"
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY ") && l.split_whitespace().any(|w| w == worker)),
            "infra/Dockerfile does not copy {worker}"
        );
        let stop: u64 = prop(block, "StopTimeout").unwrap().parse().unwrap();
        let drain_at = block
            .iter()
            .position(|l| l.contains("Name: RELAYCAST_TIMING__DRAIN_TIMEOUT_MS"))
            .unwrap_or_else(|| panic!("{name} sets no drain timeout"));
        let drain_ms: u64 = props(&block[drain_at + 1..], "Value")[0]
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!(
            drain_ms < stop * 1000,
            "{name}: the drain ({drain_ms} ms) must end before ECS kills the task ({stop} s)"
        );
    }
}

#[test]
fn the_http_api_routes_every_path_to_the_function_that_serves_it() {
    use relaycast_functions::{api, callbacks};
    let text = std::fs::read_to_string(template()).unwrap();
    let resources = resources(&text);
    let routes: Vec<(String, String)> = of_type(&resources, "AWS::Serverless::Function")
        .iter()
        .flat_map(|(_, block)| {
            let bin = function_bin(block);
            props(block, "Path")
                .into_iter()
                .map(move |p| (p.to_string(), bin.clone()))
        })
        .collect();
    let served_by = |path: &str| -> Vec<&str> {
        routes
            .iter()
            .filter(|(route, _)| match route.strip_suffix("{proxy+}") {
                Some(prefix) => path.starts_with(prefix),
                None => route == path,
            })
            .map(|(_, bin)| bin.as_str())
            .collect()
    };
    for (path, bin) in [
        (api::FORWARD_REQUEST_PATH, "relaycast-api"),
        (api::FORWARD_QUERY_PATH, "relaycast-api"),
        ("/v1/hooks", "relaycast-api"),
        ("/v1/recordings/r1", "relaycast-api"),
        (callbacks::CSS_PATH, "relaycast-callbacks"),
        (callbacks::NGINX_RTMP_PATH, "relaycast-callbacks"),
        (callbacks::SRS_PATH, "relaycast-callbacks"),
    ] {
        assert_eq!(served_by(path), [bin], "route of {path}");
    }
}

#[test]
fn queue_functions_report_partial_batch_failures_within_the_queue_visibility() {
    let text = std::fs::read_to_string(template()).unwrap();
    let resources = resources(&text);
    let mut queue_fed = Vec::new();
    for (name, block) in of_type(&resources, "AWS::Serverless::Function") {
        let Some(queue) = prop(block, "Queue") else {
            continue;
        };
        let queue = queue
            .strip_prefix("!GetAtt ")
            .and_then(|q| q.strip_suffix(".Arn"))
            .unwrap_or_else(|| panic!("{name}: queue {queue} is not a stack queue"));
        queue_fed.push(function_bin(block));
        assert_eq!(
            prop(block, "FunctionResponseTypes"),
            Some("[ReportBatchItemFailures]"),
            "{name}: one failed message must not redo its batch"
        );
        let timeout: u64 = prop(block, "Timeout")
            .expect("the function sets its timeout")
            .parse()
            .unwrap();
        let visibility: u64 = prop(find(&resources, queue), "VisibilityTimeout")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            visibility >= 6 * timeout,
            "{queue}: visibility {visibility} s is below 6 x {name}'s timeout of {timeout} s"
        );
    }
    queue_fed.sort();
    assert_eq!(queue_fed, ["relaycast-notifier", "relaycast-recordings"]);
    let scheduler = find(&resources, "SchedulerFunction");
    assert_eq!(prop(scheduler, "Schedule"), Some("rate(1 minute)"));
    let bucket = find(&resources, "RecordingsBucket");
    assert_eq!(
        prop(bucket, "Queue"),
        Some("!GetAtt ObjectNoticesQueue.Arn"),
        "the bucket notifies object-notices"
    );
}

#[test]
fn every_dead_letter_queue_raises_an_alarm_and_every_job_queue_scales_its_workers() {
    let text = std::fs::read_to_string(template()).unwrap();
    let resources = resources(&text);
    let alarms = of_type(&resources, "AWS::CloudWatch::Alarm");
    let alarm_on = |queue: &str| {
        alarms.iter().find(|(_, block)| {
            prop(block, "Value") == Some(&format!("!GetAtt {queue}.QueueName"))
                && prop(block, "MetricName") == Some("ApproximateNumberOfMessagesVisible")
        })
    };
    let queues = of_type(&resources, "AWS::SQS::Queue");
    let dlqs: Vec<_> = queues
        .iter()
        .filter(|(_, block)| prop(block, "QueueName").unwrap().ends_with("-dlq\""))
        .collect();
    assert_eq!(dlqs.len(), relaycast::http::OBSERVED_QUEUES.len());
    for (dlq, _) in dlqs {
        let (alarm, block) = alarm_on(dlq).unwrap_or_else(|| panic!("no alarm on {dlq}"));
        assert_eq!(prop(block, "Threshold"), Some("0"), "{alarm}");
        assert_eq!(
            prop(block, "ComparisonOperator"),
            Some("GreaterThanThreshold"),
            "{alarm}"
        );
    }
    for (queue, policy) in [
        ("RelayJobsQueue", "RelayBacklogScaleOut"),
        ("RecordJobsQueue", "RecorderBacklogScaleOut"),
    ] {
        let (alarm, block) = alarm_on(queue).unwrap_or_else(|| panic!("no alarm on {queue}"));
        assert!(
            block.iter().any(|l| l.trim() == format!("- !Ref {policy}")),
            "{alarm} does not scale the workers"
        );
    }
}

#[test]
fn every_setting_the_template_passes_is_a_setting_relaycast_reads() {
    let text = std::fs::read_to_string(template()).unwrap();
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        // `RELAYCAST_X: value` (Lambda) or `- Name: RELAYCAST_X` + `Value: value` (ECS).
        let (name, value) = if let Some(name) = line.strip_prefix("- Name: ") {
            let value = lines[i + 1].trim().strip_prefix("Value: ").unwrap_or("");
            (name, value)
        } else if let Some((name, value)) = line.split_once(": ") {
            (name, value)
        } else {
            continue;
        };
        let is_variable = name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !name.starts_with("RELAYCAST_") || !is_variable {
            continue;
        }
        // Literal values are checked as they are, stack references with a value of their kind.
        let literal = (!value.starts_with('!')).then(|| value.trim_matches('"').to_string());
        names.push((name.to_string(), literal));
    }
    assert!(names.len() > 8, "found {names:?}");
    assert!(
        text.contains("RELAYCAST_AWS__QUEUE_PREFIX: !Sub \"${NamePrefix}-\""),
        "the queue prefix must match the queue names ${{NamePrefix}}-<queue>"
    );
    let env = names.iter().map(|(name, literal)| {
        let value = literal.clone().unwrap_or_else(|| match name.as_str() {
            "RELAYCAST_ACCOUNTS" => {
                r#"[{name = "acme", key = "0123456789abcdef0123456789abcdef"}]"#.into()
            }
            "RELAYCAST_PUBLIC_URL" => "https://api.example.com".into(),
            "RELAYCAST_LOG_FILTER" => "info".into(),
            _ => "relaycast-x".into(),
        });
        (name.clone(), value)
    });
    let settings = relaycast_core::config::Settings::load(None, env)
        .unwrap_or_else(|e| panic!("the template's settings are refused: {e}"));
    let aws = settings
        .aws
        .expect("the template configures the AWS adapters");
    assert_eq!(aws.region.as_deref(), Some("relaycast-x"));
    assert_eq!(settings.queue.max_receives, 5, "as the redrive policies");
}
