"""Expands a SAM template into the CloudFormation it deploys, as
`sam deploy` would (the AWS SAM translator), and prints it as JSON.

Usage: sam_translate.py TEMPLATE. Local CodeUri/DefinitionUri values are
replaced by placeholder S3 URIs first, as `sam package` would upload them.
"""
import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The template uses no managed policies by name; nothing to look up."""

    def load(self):
        return {}


def main(path):
    with open(path) as f:
        doc = yaml_parse(f.read())
    for res in doc.get("Resources", {}).values():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = "s3://placeholder/code.zip"
        if res.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            props["DefinitionUri"] = "s3://placeholder/definition.json"
    print(json.dumps(transform(doc, {}, NoManagedPolicies()), default=str))


if __name__ == "__main__":
    main(sys.argv[1])
