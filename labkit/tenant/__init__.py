"""The tenant's half of the lab as data: what getting-started.md has attendees click together.

1. the Ops runbook, a Dynatrace notebook (labkit writes its own from the lab's three DQL sections),
   whose link goes into the cart pod's `supportInfo` annotation;
2. the OpenPipeline logs pipeline "Log Errors" with a Davis event processor;
3. the dynamic route "Critical Logs" that sends the collector's tagged cart logs to it.
The lab's collector (collector-values.yaml) tags a cart log with `alertmessage` and `priority`
only where service.name == "cart", deployment.release_stage == "production" and the body matches
`(?i)wasn't able to connect to redis.*`; the route's matcher needs both.
"""
from __future__ import annotations

import json

PIPELINES_SCHEMA = "builtin:openpipeline.logs.pipelines"
ROUTING_SCHEMA = "builtin:openpipeline.logs.routing"

PIPELINE_NAME = "Log Errors"  # the pipeline's displayName on the lab page
PIPELINE_ID = "labkit-log-errors"  # labkit's customId (the UI makes e.g. pipeline_Log_Errors_1234)
PROCESSOR_ID = "labkit-log-errors-davis-event"
PROCESSOR_NAME = "Send alert from OpenPipeline"
ROUTE_NAME = "Critical Logs"  # the route's description (its name in the UI)
ROUTE_MATCHER = 'isNotNull(alertmessage) and isNotNull(priority) and priority == "1"'

EVENT_TYPE = "ERROR_EVENT"
EVENT_NAME = ("[{priority}][{deployment.release_stage}][{deployment.release_product}][{dt.owner}] "
              "{alertmessage}")
EVENT_DESCRIPTION = "{supportInfo} - Log line: {content}"
EVENT_FIELDS = ("dt.owner", "dt.cost.costcenter", "dt.cost.product", "deployment.release_product",
                "deployment.release_stage")  # each property is {itself}
# The Davis event processor's properties, as the lab page's pipeline-davis-event.png lists them.
EVENT_PROPERTIES = {"event.type": EVENT_TYPE, "event.name": EVENT_NAME,
                    "event.description": EVENT_DESCRIPTION,
                    **{key: "{" + key + "}" for key in EVENT_FIELDS}}

# What the collector's transform adds to the cart's redis error logs, and the problem it makes.
ALERT_MESSAGE = "Critical Redis connection error!"
PRIORITY = "1"
PROBLEM_TITLE = f"[{PRIORITY}][production][otel-demo-app][teamA] {ALERT_MESSAGE}"
REDIS_BODY = "(?i)wasn't able to connect to redis.*"
COLLECTOR_LINES = """\
    transform:
      log_statements:
        - context: log
          statements:
            - set(attributes["alertmessage"], "Critical Redis connection error!")
              where resource.attributes["service.name"] == "cart"
              and resource.attributes["deployment.release_stage"] == "production"
              and IsMatch(body, "(?i)wasn't able to connect to redis.*")
            - set(attributes["priority"], "1")
              where resource.attributes["service.name"] == "cart"
              and resource.attributes["deployment.release_stage"] == "production"
              and IsMatch(body, "(?i)wasn't able to connect to redis.*")
"""

RUNBOOK_NAME = "Redis Troubleshooting"
RUNBOOK_ID = "labkit-redis-troubleshooting"  # a custom document id (not a bare UUID, as the API wants)
SUPPORT_INFO = ("## Cart Service Issues Support Information\n"
                "If cart service is having issues, please contact the owner\n"
                "and review the [Ops runbook]({link})\n")


def pipeline_value(custom_id: str = PIPELINE_ID, processor_id: str = PROCESSOR_ID) -> dict:
    """The "Log Errors" pipeline as a Settings 2.0 value of builtin:openpipeline.logs.pipelines."""
    return {"customId": custom_id, "displayName": PIPELINE_NAME, "davis": {"processors": [{
        "type": "davis", "id": processor_id, "description": PROCESSOR_NAME, "enabled": True,
        "matcher": "true",
        "davis": {"properties": [{"key": k, "value": v} for k, v in EVENT_PROPERTIES.items()]}}]}}


def route_entry(pipeline_object_id: str) -> dict:
    """The "Critical Logs" dynamic route: one entry of the routing object's routingEntries."""
    return {"enabled": True, "pipelineType": "custom", "pipelineId": pipeline_object_id,
            "matcher": ROUTE_MATCHER, "description": ROUTE_NAME}


def runbook_link(apps_url: str, document_id: str = RUNBOOK_ID) -> str:
    return f"{apps_url.rstrip('/')}/ui/document/{document_id}"


def support_info(apps_url: str, document_id: str = RUNBOOK_ID) -> str:
    """The cart pod's supportInfo annotation, linking the runbook on this tenant."""
    return SUPPORT_INFO.format(link=runbook_link(apps_url, document_id))


# The runbook's sections: the lab's contact list, then its three queries (version "6", the lab file's).
_CONTACTS = """# ☎️ Contact List
Redis is a key service which also impacts downstream partner services.

## Follow this Checklist NOW!

1. Raise a Major Incident
1. Notify the on call incident commander
1. Also contact the cart's owner, teamA

## Begin Troubleshooting

Now action the initial troubleshooting steps below."""
RUNBOOK_QUERIES = (
    ("Cart Service Failure Rate", "lineChart",
     "timeseries `A: avg(dt.service.request.failure_count)` = avg(dt.service.request.failure_count), "
     "by: { dt.entity.service }\n| fieldsAdd dt.entity.service.name = entityName(dt.entity.service)\n"
     '| filter dt.entity.service.name == "cart"\n| limit 1'),
    ("Problems relating to Configuration Changes", "barChart",
     'fetch events\n| filter event.type == "CUSTOM_CONFIGURATION"\n| filter dt.entity.service.name == "cart"\n'
     "| makeTimeseries count(), by: {feature_flag.key, defaultValue}\n"
     '| append [fetch dt.davis.problems\n| filter matchesPhrase(event.name, "redis")\n'
     "| makeTimeseries count(), by: {event.name}]"),
    ("Fetch logs", "table",
     'fetch logs\n| filter matchesPhrase(content, "redis")\n| sort timestamp desc\n| limit 100'),
)


def runbook_notebook() -> dict:
    """The Ops runbook as a Notebooks document's content (no cached results)."""
    sections = [{"id": "labkit-contacts", "type": "markdown", "markdown": _CONTACTS}]
    for i, (title, chart, query) in enumerate(RUNBOOK_QUERIES, 1):
        sections.append({"id": f"labkit-query-{i}", "type": "dql", "title": title, "showTitle": True,
                         "drilldownPath": [], "state": {
                             "input": {"value": query, "timeframe": {"from": "now()-30m", "to": "now()"}},
                             "visualization": chart, "querySettings": {"maxResultRecords": 1000}}})
    return {"version": "6", "defaultTimeframe": {"from": "now()-30m", "to": "now()"}, "sections": sections}


def runbook_content() -> bytes:
    return json.dumps(runbook_notebook(), indent=1, ensure_ascii=False).encode()
