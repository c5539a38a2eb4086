import pytest

from shared.core.config import load_settings
from shared.core.errors import ConfigError


def test_defaults_need_only_the_project():
    settings = load_settings({"GCP_PROJECT": "proj"})
    assert settings.project == "proj"
    assert settings.results_topic_path == "projects/proj/topics/dataloop-gar-results"
    assert settings.skip_tag_patterns[:3] == ("*.sig", "*.att", "*.sbom")
    assert settings.secret_manager_endpoint is None


def test_the_default_skip_list_holds_the_referrers_tag_schema():
    """docs/external-apis.md §1.3: ``sha256-<64 hex>``, no suffix."""
    import fnmatch

    patterns = load_settings({"GCP_PROJECT": "proj"}).skip_tag_patterns
    assert any(fnmatch.fnmatchcase("sha256-" + "0f" * 32, p) for p in patterns)
    assert not any(fnmatch.fnmatchcase("sha256-" + "0f" * 31, p) for p in patterns)


def test_google_cloud_project_is_accepted_as_the_project():
    assert load_settings({"GOOGLE_CLOUD_PROJECT": "other"}).project == "other"


def test_every_problem_is_listed_in_one_error():
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "HTTP_TIMEOUT_SECONDS": "soon",
                "HTTP_RETRIES": "99",
                "LOG_LEVEL": "chatty",
                "SECRET_MANAGER_ENDPOINT": "127.0.0.1:9",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 5
    text = str(caught.value)
    for name in ("GCP_PROJECT", "HTTP_TIMEOUT_SECONDS", "HTTP_RETRIES", "LOG_LEVEL", "SECRET_MANAGER_ENDPOINT"):
        assert name in text


def test_lists_and_full_topic_paths():
    settings = load_settings(
        {
            "GCP_PROJECT": "proj",
            "SKIP_TAG_PATTERNS": "",
            "REGISTRY_INSECURE_HOSTS": "127.0.0.1:5000, localhost:5001",
            "RESULTS_TOPIC": "projects/elsewhere/topics/results",
            "SECRET_MANAGER_ENDPOINT": "http://127.0.0.1:8086/",
        }
    )
    assert settings.skip_tag_patterns == ()
    assert settings.registry_insecure_hosts == ("127.0.0.1:5000", "localhost:5001")
    assert settings.results_topic_path == "projects/elsewhere/topics/results"
    assert settings.secret_manager_endpoint == "http://127.0.0.1:8086"
