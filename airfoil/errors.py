"""Errors that the CLI turns into a one-line message and exit status 2."""


class AirfoilError(Exception):
    """Bad input or an impossible request; the message names the file, field or op and what was expected."""


def read_yaml(path, error: type[AirfoilError], what: str):
    """Parse a YAML file, turning a missing file or a syntax error into ``error`` naming the file."""
    import yaml

    try:
        return yaml.safe_load(open(path, encoding="utf-8").read())
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
