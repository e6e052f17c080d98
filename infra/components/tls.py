"""TLS: the public ACM certificate of the domain and the internal CA of the hosts."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls


@dataclass(frozen=True, kw_only=True)
class TlsArgs:
    """``hosted_zone`` (optional) receives the DNS validation records; without one they
    are exported for whoever runs the domain's DNS. ``secret_prefix`` is
    ``/<project>/<stack>``."""

    domain: str
    hosted_zone: str | None
    secret_prefix: str
    tags: dict[str, str]


class Tls(pulumi.ComponentResource):
    """ACM certificate (DNS validation) for the ALB, and an internal CA (pulumi-tls)
    issuing the certificate the hosts' nginx presents to the ALB on 443. The CA key
    never leaves Pulumi state; the host certificate, its key and the CA certificate are
    kept in Secrets Manager (``<prefix>/nginx-tls``) for the deploy to fetch.

    Outputs: ``certificate_arn`` (validated when a zone is configured), ``status``,
    ``validation_records`` (name/type/value to create by hand when there is no zone),
    ``zone_id`` (or None), ``ca_cert_pem``, ``nginx_secret_arn``.
    """

    def __init__(
        self, name: str, args: TlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Tls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        cert = aws.acm.Certificate(
            name,
            domain_name=args.domain,
            validation_method="DNS",
            key_algorithm="EC_prime256v1",
            tags=args.tags,
            opts=child,
        )
        option = cert.domain_validation_options[0]
        self.validation_records = [
            {
                "name": option.resource_record_name,
                "type": option.resource_record_type,
                "value": option.resource_record_value,
            }
        ]
        self.zone_id: str | None = None
        self.certificate_arn: pulumi.Output[str] = cert.arn
        if args.hosted_zone:
            zone = aws.route53.get_zone(
                name=args.hosted_zone, private_zone=False, opts=pulumi.InvokeOptions(parent=self)
            )
            self.zone_id = zone.zone_id
            record = aws.route53.Record(
                f"{name}-validation",
                zone_id=zone.zone_id,
                name=option.resource_record_name,
                type=option.resource_record_type,
                records=[option.resource_record_value],
                ttl=300,
                allow_overwrite=True,
                opts=child,
            )
            # Listeners wait for ISSUED instead of failing on a pending certificate.
            validation = aws.acm.CertificateValidation(
                name,
                certificate_arn=cert.arn,
                validation_record_fqdns=[record.fqdn],
                opts=child,
            )
            self.certificate_arn = validation.certificate_arn
        self.status = cert.status

        ca_key = tls.PrivateKey(f"{name}-ca", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{args.secret_prefix.strip('/')} internal CA",
                organization="mcpdeploy",
            ),
            is_ca_certificate=True,
            validity_period_hours=10 * 8760,
            allowed_uses=["cert_signing", "crl_signing"],
            opts=child,
        )
        host_key = tls.PrivateKey(
            f"{name}-nginx", algorithm="ECDSA", ecdsa_curve="P256", opts=child
        )
        request = tls.CertRequest(
            f"{name}-nginx",
            private_key_pem=host_key.private_key_pem,
            dns_names=[args.domain],
            subject=tls.CertRequestSubjectArgs(common_name=args.domain, organization="mcpdeploy"),
            opts=child,
        )
        host_cert = tls.LocallySignedCert(
            f"{name}-nginx",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=8760,
            # A `pulumi up` in the last 30 days reissues it; the deploy then ships the new one.
            early_renewal_hours=720,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        secret = aws.secretsmanager.Secret(
            f"{name}-nginx",
            name=f"{args.secret_prefix}/nginx-tls",
            description="nginx certificate, key and internal CA of the app hosts",
            recovery_window_in_days=7,
            tags=args.tags,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-nginx",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps(
                {
                    "certificate": host_cert.cert_pem,
                    "private_key": host_key.private_key_pem,
                    "ca": ca.cert_pem,
                }
            ),
            opts=child,
        )

        self.ca_cert_pem = ca.cert_pem
        self.nginx_secret_arn = secret.arn
        self.register_outputs(
            {
                "certificate_arn": self.certificate_arn,
                "status": self.status,
                "validation_records": self.validation_records,
                "zone_id": self.zone_id,
                "ca_cert_pem": self.ca_cert_pem,
                "nginx_secret_arn": self.nginx_secret_arn,
            }
        )
