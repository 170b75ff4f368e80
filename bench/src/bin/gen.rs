//! Writes a benchmark service directory: three dependent models (Site <- Slice <- Instance),
//! one REST actuator each (a simple-form PUT to the bench server), and one objects file.
//! Optionally writes the same requests, level by level, for the raw reqwest baseline.
//!
//! gen --dir DIR --url http://127.0.0.1:PORT --sites N --slices N --instances N
//!     [--concurrency N] [--requests FILE]
//!
//! Slice i belongs to Site (i mod sites), Instance i to Slice (i mod slices). Files written:
//! DIR/stepsync.yaml, DIR/schemas/models.yaml, DIR/stepdefs/{site,slice,instance}.yaml,
//! DIR/objects/objects.yaml. The requests file has one JSON object per line:
//! {"level": 0|1|2, "method": "PUT", "url": "...", "body": "<JSON text>"}.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

const SCHEMA: &str = "\
models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
      max_instances: {type: int, default: 10}
  Instance:
    fields:
      name: {type: string, required: true}
      slice: {type: ref, to: Slice, required: true}
      flavor: {type: string, enum: [small, large]}
";

const SITE: &str = r#"kind: Actuator
model: Site
attributes:
  site_name: "{{ object.name }}"
  login_base: "{{ object.login_base }}"
sync:
  rest:
    method: PUT
    url: "{{ vars.backend }}/sites/{{ site_name }}"
    body: {name: "{{ site_name }}", login_base: "{{ login_base }}"}
delete:
  rest: {method: DELETE, url: "{{ vars.backend }}/sites/{{ site_name }}"}
"#;

const SLICE: &str = r#"kind: Actuator
model: Slice
attributes:
  slice_name: "{{ object.name }}"
  site_name: "{{ object.site.name }}"
  max_instances: "{{ object.max_instances }}"
sync:
  rest:
    method: PUT
    url: "{{ vars.backend }}/slices/{{ slice_name }}"
    body: {name: "{{ slice_name }}", site: "{{ site_name }}", max_instances: "{{ max_instances }}"}
delete:
  rest: {method: DELETE, url: "{{ vars.backend }}/slices/{{ slice_name }}"}
"#;

const INSTANCE: &str = r#"kind: Actuator
model: Instance
attributes:
  instance_name: "{{ object.name }}"
  slice_name: "{{ object.slice.name }}"
  site_name: "{{ object.slice.site.name }}"
  flavor: "{{ object.flavor }}"
sync:
  rest:
    method: PUT
    url: "{{ vars.backend }}/instances/{{ instance_name }}"
    body: {name: "{{ instance_name }}", slice: "{{ slice_name }}", site: "{{ site_name }}", flavor: "{{ flavor }}"}
delete:
  rest: {method: DELETE, url: "{{ vars.backend }}/instances/{{ instance_name }}"}
"#;

struct Args {
    dir: PathBuf,
    url: String,
    sites: usize,
    slices: usize,
    instances: usize,
    concurrency: usize,
    requests: Option<PathBuf>,
}

fn parse() -> Args {
    let mut a = Args {
        dir: PathBuf::new(),
        url: String::new(),
        sites: 100,
        slices: 1000,
        instances: 8900,
        concurrency: 16,
        requests: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let num = |v: &str| {
            v.parse::<usize>()
                .unwrap_or_else(|_| usage(&format!("bad {k}")))
        };
        match k.as_str() {
            "--dir" => a.dir = v.into(),
            "--url" => a.url = v.trim_end_matches('/').to_owned(),
            "--sites" => a.sites = num(&v),
            "--slices" => a.slices = num(&v),
            "--instances" => a.instances = num(&v),
            "--concurrency" => a.concurrency = num(&v),
            "--requests" => a.requests = Some(v.into()),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.dir.as_os_str().is_empty() || a.url.is_empty() {
        usage("--dir and --url are required");
    }
    // Slices hang off Sites and Instances off Slices: none of either is fine (B11's
    // independent Sites), but children need parents.
    if a.sites == 0 || (a.slices == 0 && a.instances > 0) {
        usage("--sites must be at least 1, and --slices too when there are --instances");
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "gen: {msg}\nusage: gen --dir DIR --url URL [--sites N] [--slices N] [--instances N] [--concurrency N] [--requests FILE]"
    );
    std::process::exit(2);
}

fn write(path: PathBuf, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn flavor(i: usize) -> &'static str {
    if i.is_multiple_of(3) {
        "large"
    } else {
        "small"
    }
}

fn main() {
    let a = parse();
    write(
        a.dir.join("stepsync.yaml"),
        &format!(
            "name: bench\nconcurrency: {}\nvars:\n  backend: {}\nlogging: {{level: warn}}\n",
            a.concurrency, a.url
        ),
    );
    write(a.dir.join("schemas/models.yaml"), SCHEMA);
    write(a.dir.join("stepdefs/site.yaml"), SITE);
    write(a.dir.join("stepdefs/slice.yaml"), SLICE);
    write(a.dir.join("stepdefs/instance.yaml"), INSTANCE);

    let objects = a.dir.join("objects/objects.yaml");
    std::fs::create_dir_all(objects.parent().unwrap()).expect("objects dir");
    let mut o = BufWriter::new(std::fs::File::create(&objects).expect("objects file"));
    let mut r = a
        .requests
        .as_ref()
        .map(|p| BufWriter::new(std::fs::File::create(p).expect("requests file")));
    let mut req = |level: u8, path: String, body: String| {
        if let Some(r) = r.as_mut() {
            let line = serde_json::json!({
                "level": level, "method": "PUT", "url": format!("{}{path}", a.url), "body": body,
            });
            writeln!(r, "{line}").expect("write requests");
        }
    };
    let mut line = String::new();
    writeln!(o, "Site:").unwrap();
    for i in 0..a.sites {
        line.clear();
        writeln!(line, "  - {{name: site-{i}, login_base: s{i}}}").unwrap();
        o.write_all(line.as_bytes()).unwrap();
        req(
            0,
            format!("/sites/site-{i}"),
            format!(r#"{{"name":"site-{i}","login_base":"s{i}"}}"#),
        );
    }
    writeln!(o, "Slice:").unwrap();
    for i in 0..a.slices {
        let site = i % a.sites;
        line.clear();
        writeln!(line, "  - {{name: slice-{i}, site: site-{site}}}").unwrap();
        o.write_all(line.as_bytes()).unwrap();
        req(
            1,
            format!("/slices/slice-{i}"),
            format!(r#"{{"name":"slice-{i}","site":"site-{site}","max_instances":10}}"#),
        );
    }
    if a.instances > 0 {
        writeln!(o, "Instance:").unwrap();
    }
    for i in 0..a.instances {
        let slice = i % a.slices;
        let site = slice % a.sites;
        let f = flavor(i);
        line.clear();
        writeln!(
            line,
            "  - {{name: inst-{i}, slice: slice-{slice}, flavor: {f}}}"
        )
        .unwrap();
        o.write_all(line.as_bytes()).unwrap();
        req(
            2,
            format!("/instances/inst-{i}"),
            format!(
                r#"{{"name":"inst-{i}","slice":"slice-{slice}","site":"site-{site}","flavor":"{f}"}}"#
            ),
        );
    }
    o.flush().expect("flush objects");
    if let Some(mut r) = r {
        r.flush().expect("flush requests");
    }
    eprintln!(
        "gen: {} objects ({} sites, {} slices, {} instances) in {}",
        a.sites + a.slices + a.instances,
        a.sites,
        a.slices,
        a.instances,
        a.dir.display()
    );
}
