//! `msb image …` and `msb pull`: pull images from registries and push them
//! back, load image archives, save and remove images, list images, and
//! build the local busybox image used by the demo and tests.

use std::path::PathBuf;

use clap::Subcommand;
use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, DEFAULT_BUSYBOX_REF};
use microsandbox::{CallOpts, MicrosandboxResult};

use crate::render::{Removed, print_json, print_json_list, with_progress};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Load an OCI image layout tar or a `docker save` tar.
    Load {
        archive: PathBuf,
        /// Reference to load it under (default: the name inside the archive).
        #[arg(long)]
        tag: Option<String>,
    },
    /// List loaded images.
    Ls,
    /// Write an image as an OCI image layout archive (tar) that other tools
    /// read; an existing OUT is replaced, as `docker save -o` does.
    Save {
        /// Image reference or manifest digest.
        reference: String,
        /// The archive to write.
        out: PathBuf,
    },
    /// Remove an image and the blobs and root disk no other image uses.
    Rm {
        /// Image reference, or a manifest digest (every reference to it).
        reference: String,
    },
    /// Push a local image to a registry (same manifest digest there).
    Push {
        /// The local image: reference or manifest digest.
        image: String,
        /// Where: `host[:port]/repo:tag` (or `@sha256:…`).
        target: String,
    },
    /// Build a tiny busybox image from the host's busybox-static and load it.
    Busybox {
        /// Reference to give it.
        #[arg(long, default_value = DEFAULT_BUSYBOX_REF)]
        tag: String,
        /// Also keep the OCI archive at this path.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The static busybox binary to package.
        #[arg(long, default_value = DEFAULT_BUSYBOX)]
        busybox: PathBuf,
    },
}

pub async fn run(cmd: ImageCommand, json: bool) -> MicrosandboxResult<()> {
    let image = match cmd {
        ImageCommand::Load { archive, tag } => Image::load(archive, tag).await?,
        ImageCommand::Ls => {
            let images = Image::list().await?;
            if json {
                print_json_list(&images);
            } else {
                for i in images {
                    let origin = i.origin.as_deref().unwrap_or("local");
                    println!("{:<40} {} {origin}", i.reference, i.manifest_digest);
                }
            }
            return Ok(());
        }
        ImageCommand::Save { reference, out } => return save(reference, out, json).await,
        ImageCommand::Rm { reference } => {
            Image::remove(reference.clone()).await?;
            if json {
                print_json(&Removed {
                    removed: &reference,
                });
            } else {
                println!("removed {reference}");
            }
            return Ok(());
        }
        ImageCommand::Push { image, target } => return push(image, target, json).await,
        ImageCommand::Busybox { tag, out, busybox } => {
            // Without --out the archive is scratch; with it, it is kept
            // wherever it is (even under the temporary directory).
            let keep = out.is_some();
            let archive = out.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("msb-busybox-{}.tar", std::process::id()))
            });
            Image::build_busybox(busybox, tag.clone(), archive.clone()).await?;
            let loaded = Image::load(&archive, Some(tag)).await;
            if !keep {
                let _ = std::fs::remove_file(&archive);
            }
            loaded?
        }
    };
    if json {
        print_json(&image);
    } else {
        println!("loaded {} ({})", image.reference, image.manifest_digest);
    }
    Ok(())
}

/// `msb image save REF OUT` (a bar on a terminal).
async fn save(reference: String, out: PathBuf, json: bool) -> MicrosandboxResult<()> {
    let image = Image::get(reference.clone()).await?;
    with_progress("saving", json, |progress| {
        Image::save_with(
            reference,
            out.clone(),
            CallOpts {
                progress,
                ..CallOpts::default()
            },
        )
    })
    .await?;
    if json {
        print_json(&serde_json::json!({
            "path": out,
            "reference": image.reference,
            "manifest_digest": image.manifest_digest,
        }));
    } else {
        println!(
            "saved {} ({}) to {}",
            image.reference,
            image.manifest_digest,
            out.display()
        );
    }
    Ok(())
}

/// `msb pull REF`: pull an image from its registry (a bar on a terminal).
pub async fn pull(reference: String, json: bool) -> MicrosandboxResult<()> {
    let image = with_progress("pulling", json, |progress| {
        Image::pull_with(
            reference,
            CallOpts {
                progress,
                ..CallOpts::default()
            },
        )
    })
    .await?;
    if json {
        print_json(&image);
    } else {
        println!("pulled {} ({})", image.reference, image.manifest_digest);
    }
    Ok(())
}

/// `msb image push REF TARGET`: push a local image (a bar on a terminal).
async fn push(image: String, target: String, json: bool) -> MicrosandboxResult<()> {
    let digest = with_progress("pushing", json, |progress| {
        Image::push_with(
            image,
            target.clone(),
            CallOpts {
                progress,
                ..CallOpts::default()
            },
        )
    })
    .await?;
    if json {
        print_json(&serde_json::json!({ "digest": digest }));
    } else {
        println!("pushed {target} ({digest})");
    }
    Ok(())
}
