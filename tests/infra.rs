//! `infra/relaycast.yaml`, the AWS data layer: valid CloudFormation (cfn-lint), and naming the
//! queues the code uses.

use std::path::{Path, PathBuf};
use std::process::Command;

fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra").join("relaycast.yaml")
}

/// cfn-lint is missing: CI must have it (`scripts/install-deps.sh test`), elsewhere the check
/// is skipped with a message.
fn cfn_lint_missing(why: &str) {
    let message = format!(
        "cfn-lint is not available ({why}); install it with `scripts/install-deps.sh test` or `python3 -m pip install cfn-lint`"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message} (CI is set, so this check may not be skipped)");
    }
    eprintln!("skipping the cfn-lint check: {message}");
}

#[test]
fn template_passes_cfn_lint() {
    let template = template();
    let output =
        match Command::new("cfn-lint").arg("--").arg(&template).current_dir(env!("CARGO_MANIFEST_DIR")).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return cfn_lint_missing("not on PATH"),
            Err(e) => panic!("cannot run cfn-lint: {e}"),
        };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A pyenv (or similar) shim on PATH answers 127 when no installed Python has cfn-lint.
    if output.status.code() == Some(127) {
        return cfn_lint_missing(&format!("the command on PATH answered 127: {}", stderr.trim()));
    }
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
    let queues = [relaycast_core::app::relay::RELAY_QUEUE, relaycast_core::domain::outbox::CALLBACK_QUEUE];
    for queue in queues {
        assert!(relaycast::http::OBSERVED_QUEUES.contains(&queue), "{queue} is not observed");
    }
    for queue in relaycast::http::OBSERVED_QUEUES {
        let dlq = relaycast_core::ports::dead_letter_queue(queue);
        for name in [queue.to_string(), dlq] {
            assert!(text.contains(&format!("QueueName: !Sub \"${{NamePrefix}}-{name}\"")), "no queue {name}");
        }
    }
    let redrives = text.matches("maxReceiveCount: 5").count();
    assert_eq!(redrives, relaycast::http::OBSERVED_QUEUES.len(), "one redrive policy per queue");
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
