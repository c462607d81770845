//! `vessel disk info` and `vessel disk check` output, as text or JSON.

use std::path::Path;

use block::{DiskImage, Format, OpenOptions};
use serde_json::json;

use crate::size::human;

fn image_json(image: &dyn DiskImage) -> anyhow::Result<serde_json::Value> {
    let details: serde_json::Map<String, serde_json::Value> = image
        .details()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Ok(json!({
        "filename": image.path().display().to_string(),
        "format": image.format().name(),
        "virtual-size": image.size(),
        "actual-size": image.allocated_bytes()?,
        "details": details,
    }))
}

pub fn info(path: &Path, opts: &OpenOptions, as_json: bool) -> anyhow::Result<i32> {
    let image = block::open(path, opts)?;
    let mut chain = Vec::new();
    let mut next = image.backing();
    while let Some(b) = next {
        chain.push(b);
        next = b.backing();
    }
    if as_json {
        let mut top = image_json(image.as_ref())?;
        let backing: Vec<_> = chain
            .iter()
            .map(|b| image_json(*b))
            .collect::<anyhow::Result<_>>()?;
        top["backing-chain"] = serde_json::Value::Array(backing);
        println!("{}", serde_json::to_string_pretty(&top)?);
        return Ok(0);
    }
    println!("image: {}", path.display());
    println!("format: {}", image.format());
    println!(
        "virtual size: {} ({} bytes)",
        human(image.size()),
        image.size()
    );
    println!("disk size: {}", human(image.allocated_bytes()?));
    for (k, v) in image.details() {
        println!("{k}: {v}");
    }
    for (depth, b) in chain.iter().enumerate() {
        println!(
            "{}backing file: {} (format {}, virtual size {})",
            "  ".repeat(depth),
            b.path().display(),
            b.format(),
            human(b.size())
        );
    }
    Ok(0)
}

pub fn check(
    path: &Path,
    format: Option<Format>,
    as_json: bool,
    repair: bool,
    allow_external_backing: bool,
) -> anyhow::Result<i32> {
    let report = match block::check(path, format, repair, allow_external_backing) {
        Ok(report) => report,
        Err(block::Error::Corrupt { reason, .. }) => {
            if as_json {
                let out = json!({"filename": path.display().to_string(), "corruptions": 1,
                    "errors": [reason], "leaks": 0, "check-errors": 0});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}: corrupt: {reason}", path.display());
            }
            return Ok(crate::exit::CORRUPT);
        }
        Err(e) => return Err(e.into()),
    };
    let code = if report.error_count > 0 {
        crate::exit::CORRUPT
    } else {
        0
    };
    if as_json {
        let out = json!({
            "filename": path.display().to_string(),
            "format": report.format.map(|f| f.name()),
            "corruptions": report.error_count,
            "errors": report.errors,
            "leaks": report.leaked_clusters,
            "leaks-fixed": report.repaired_leaks,
            "allocated-clusters": report.allocated_clusters,
            "total-clusters": report.total_clusters,
            "cluster-size": report.cluster_size,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    for e in &report.errors {
        println!("ERROR {e}");
    }
    if report.error_count as usize > report.errors.len() {
        println!(
            "... and {} more errors",
            report.error_count as usize - report.errors.len()
        );
    }
    if report.leaked_clusters > 0 {
        if report.repaired_leaks > 0 {
            println!("{} leaked clusters were freed.", report.repaired_leaks);
        } else {
            println!(
                "{} leaked clusters were found (wasted space, no harm to data; --repair frees them).",
                report.leaked_clusters
            );
        }
    }
    if report.error_count > 0 {
        println!("{} errors were found on the image.", report.error_count);
    } else {
        println!("No errors were found on the image.");
    }
    if report.total_clusters > 0 {
        println!(
            "{}/{} = {:.2}% allocated",
            report.allocated_clusters,
            report.total_clusters,
            report.allocated_clusters as f64 * 100.0 / report.total_clusters as f64
        );
    }
    Ok(code)
}
