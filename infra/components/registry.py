"""Registry and image: the ECR repository and the service image built from app_image/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker


@dataclass(frozen=True, kw_only=True)
class RegistryArgs:
    """``context`` is the ``app_image/`` directory; ``tag`` the release tag (the tag of
    the ``image`` setting); ``keep`` how many images the lifecycle policy keeps."""

    repository: str
    context: Path
    tag: str
    keep: int
    tags: dict[str, str]


class Registry(pulumi.ComponentResource):
    """A private ECR repository (scan on push, immutable tags, keeps the last ``keep``
    images) and the image built for linux/amd64 from ``app_image/Dockerfile`` and pushed
    there by pulumi-docker.

    Outputs: ``repository_url``, ``repository_arn``, ``image_ref`` (``repo@sha256:…``,
    the digest the hosts pull).
    """

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repo = aws.ecr.Repository(
            name,
            name=args.repository,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")
            ],
            tags=args.tags,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            name,
            repository=repo.name,
            policy=json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": f"keep the last {args.keep} images",
                            "selection": {
                                "tagStatus": "any",
                                "countType": "imageCountMoreThan",
                                "countNumber": args.keep,
                            },
                            "action": {"type": "expire"},
                        }
                    ]
                }
            ),
            opts=child,
        )
        token = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker.Image(
            name,
            image_name=pulumi.Output.concat(repo.repository_url, ":", args.tag),
            build=docker.DockerBuildArgs(
                context=str(args.context),
                dockerfile=str(args.context / "Dockerfile"),
                platform="linux/amd64",
                args={"VERSION": args.tag},
            ),
            registry=docker.RegistryArgs(
                server=repo.repository_url,
                username=token.user_name,
                password=pulumi.Output.secret(token.password),
            ),
            opts=child,
        )

        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.image_ref = image.repo_digest
        self.register_outputs(
            {
                "repository_url": self.repository_url,
                "repository_arn": self.repository_arn,
                "image_ref": self.image_ref,
            }
        )


def release_tag(image: str) -> str:
    """The tag of an image reference (``repo/name:1.4.2@sha256:…`` → ``1.4.2``); ECR tags
    are immutable, so ``latest`` is used only when the reference names none."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0]
    return name.partition(":")[2] or "latest"
