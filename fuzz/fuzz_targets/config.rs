//! Configuration parsing: an `ilagent daemon` command line through clap and the
//! validation `main` runs (`DaemonConfig::from_args`, `client_settings`,
//! `delivery_settings`). Errors are expected; panics are not.
//!
//! Input: the arguments after `ilagent daemon`, split on NUL when there is one (so that an
//! argument can hold spaces), else on whitespace; bytes that are not UTF-8 stay as they are.
//!
//! Nothing here may touch the machine: `try_parse_from` returns `--help`, `--version` and
//! errors instead of printing and exiting, and the flags whose validation opens files
//! (`--kafka_ssl_*`, `--mqtt_ca`, `--mqtt_client_*`, and `--mqtt_tls`, which loads the
//! system's roots) are cleared after parsing, so that a path such as a FIFO cannot block
//! the run.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use clap::Parser;
use ilagent::cli::{Cli, Command};
use ilagent::config::{DaemonConfig, client_settings, delivery_settings};
use ilagent::secret::mask_url_credentials;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words: Vec<&[u8]> = if data.contains(&0) {
        data.split(|&b| b == 0).collect()
    } else {
        data.split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .collect()
    };
    let argv = ["ilagent".as_bytes(), b"daemon"]
        .into_iter()
        .chain(words)
        .map(OsStr::from_bytes);
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.render().to_string();
            return;
        }
    };
    let Command::Daemon(mut args) = cli.command else {
        return;
    };
    args.kafka.connection.kafka_ssl_ca = None;
    args.kafka.connection.kafka_ssl_cert = None;
    args.kafka.connection.kafka_ssl_key = None;
    args.mqtt.connection.mqtt_ca = None;
    args.mqtt.connection.mqtt_client_cert = None;
    args.mqtt.connection.mqtt_client_key = None;
    args.mqtt.connection.mqtt_tls = false;

    let _ = mask_url_credentials(&cli.global.ilert_url);
    let _ = mask_url_credentials(&cli.global.ilert_beat_url);
    if let Err(error) = client_settings(&cli.global) {
        let _ = error.to_string();
    }
    if let Err(error) = delivery_settings(&args.delivery) {
        let _ = error.to_string();
    }
    match DaemonConfig::from_args(&cli.global, &args) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
