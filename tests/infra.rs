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
