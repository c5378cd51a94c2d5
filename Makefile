# The two commands of the README: `make up` runs the service, `make test` runs every test.
CARGO ?= cargo

.PHONY: up test build bench lint clean-data aws

up:
	./scripts/install-deps.sh run
	$(CARGO) build --release --bin relaycast
	./target/release/relaycast up

test:
	./scripts/install-deps.sh test
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

# What infra/relaycast.yaml deploys: the Lambda zips and the worker image's context (add
# ARGS=--image to build the image too; see infra/README.md).
aws:
	./scripts/install-deps.sh aws
	./scripts/build-aws.sh $(ARGS)

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all --check

bench:
	./scripts/install-deps.sh test
	$(CARGO) build --release --workspace
	./target/release/relaycast-bench queue
	./target/release/relaycast-bench store-cas
	./target/release/relaycast-bench api
	./target/release/relaycast-bench api --moto --requests 300
	./target/release/relaycast-bench writes
	./target/release/relaycast-bench callbacks
	./target/release/relaycast-bench relay --rounds 3
	./target/release/relaycast-bench record --phases cpu,finalize,callback
	# The Lambda bins as they are deployed: built alone (no SQLite), profile `lambda`, glibc 2.34.
	./scripts/build-aws.sh -p relaycast-functions
	for f in api callbacks notifier recordings scheduler; do ./target/release/relaycast-bench lambda-init --bin target/x86_64-unknown-linux-gnu/lambda/relaycast-$$f; done
	./target/release/relaycast-bench lambda-init --accounts 1 --bin target/x86_64-unknown-linux-gnu/lambda/relaycast-api

clean-data:
	rm -rf ./relaycast-data
