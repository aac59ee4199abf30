// Dynatrace's own SDK clients against a running local tenant (tests/test_sdk_parity.py runs it).
// Outside a Dynatrace app nothing sets the SDK's environment URL or token: the clients share the
// http-client's `httpClient`, whose base URL and default headers we set (its _setBaseURL and
// _setDefaultHeaders, the hooks the app runtime uses). Prints one JSON line per step.
import http from "@dynatrace-sdk/http-client";  // CommonJS packages: their default export
import classic from "@dynatrace-sdk/client-classic-environment-v2";
import document from "@dynatrace-sdk/client-document";

const { httpClient, PlatformBinary } = http;
// The SDK's multipart decoder reads navigator.vendor (a browser's); Node 21+ has a navigator,
// Node 20 does not: give it one as Node 21's (no vendor).
globalThis.navigator ??= { userAgent: `Node.js/${process.versions.node}` };
const { settingsObjectsClient } = classic;
const { documentsClient, trashClient } = document;

const { LAB_URL, LAB_TOKEN, LAB_PIPELINE, LAB_ROUTE } = process.env;
httpClient._setBaseURL(LAB_URL);
httpClient._setDefaultHeaders({ Authorization: `Bearer ${LAB_TOKEN}` });
const PIPELINES = "builtin:openpipeline.logs.pipelines", ROUTING = "builtin:openpipeline.logs.routing";
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));
const status = async (call) => {
  try { await call(); return 0; } catch (e) { return e.response?.status ?? e.status ?? String(e); }
};

// Settings: a pipeline and the routing object
const [made] = await settingsObjectsClient.postSettingsObjects({
  body: [{ schemaId: PIPELINES, scope: "environment", value: JSON.parse(LAB_PIPELINE) }] });
const pid = made.objectId;
say("pipeline created", { code: made.code, objectId: pid });
const listed = await settingsObjectsClient.getSettingsObjects({
  schemaIds: PIPELINES, fields: "objectId,value,updateToken" });
say("pipelines listed", { totalCount: listed.totalCount, names: listed.items.map((i) => i.value.displayName) });
const route = { ...JSON.parse(LAB_ROUTE), pipelineId: pid };
const [routing] = await settingsObjectsClient.postSettingsObjects({
  body: [{ schemaId: ROUTING, scope: "environment", value: { routingEntries: [route] } }] });
const rid = routing.objectId;
const before = await settingsObjectsClient.getSettingsObjectByObjectId({ objectId: rid });
const other = { enabled: true, pipelineType: "builtin", builtinPipelineId: "default", matcher: "true",
                description: "Everything else" };
const put = await settingsObjectsClient.putSettingsObjectByObjectId({ objectId: rid, body: {
  value: { routingEntries: [route, other] }, updateToken: before.updateToken } });
say("routing updated", { code: put.code, objectId: put.objectId });
say("stale updateToken", { status: await status(() => settingsObjectsClient.putSettingsObjectByObjectId({
  objectId: rid, body: { value: { routingEntries: [route] }, updateToken: before.updateToken } })) });
say("referenced pipeline delete", { status: await status(() =>
  settingsObjectsClient.deleteSettingsObjectByObjectId({ objectId: pid })) });
const after = await settingsObjectsClient.getSettingsObjectByObjectId({ objectId: rid });
say("routes", { descriptions: after.value.routingEntries.map((e) => e.description) });
await settingsObjectsClient.deleteSettingsObjectByObjectId({ objectId: rid, updateToken: after.updateToken });
const fresh = await settingsObjectsClient.getSettingsObjectByObjectId({ objectId: pid });
await settingsObjectsClient.deleteSettingsObjectByObjectId({ objectId: pid, updateToken: fresh.updateToken });
const left = await settingsObjectsClient.getSettingsObjects({ schemaIds: `${PIPELINES},${ROUTING}` });
say("settings deleted", { totalCount: left.totalCount });

// Documents: create, list, read, update, delete, purge from the trash
const id = "labkit-sdk-runbook";
const doc = await documentsClient.createDocument({ body: {
  id, name: "SDK Runbook", type: "notebook", content: PlatformBinary.fromJson({ version: "6", sections: [] }) } });
say("document created", { id: doc.id, version: doc.version });
const found = await documentsClient.listDocuments({ filter: "name == 'SDK Runbook' and type == 'notebook'" });
say("documents listed", { totalCount: found.totalCount, ids: found.documents.map((d) => d.id) });
const read = await documentsClient.getDocument({ id });
say("document read", { name: read.metadata.name, content: JSON.parse(await read.content.get("text")) });
const updated = await documentsClient.updateDocument({ id, optimisticLockingVersion: String(doc.version),
  body: { name: "SDK Runbook v2", content: PlatformBinary.fromJson({ version: "6", sections: [{ id: "a" }] }) } });
say("document updated", { name: updated.documentMetadata.name, version: updated.documentMetadata.version });
say("stale version", { status: await status(() => documentsClient.updateDocument({
  id, optimisticLockingVersion: String(doc.version), body: { name: "lost" } })) });
await documentsClient.deleteDocument({ id, optimisticLockingVersion: String(updated.documentMetadata.version) });
const trash = await trashClient.listTrashedDocuments();
say("document trashed", { ids: trash.documents.map((d) => d.id) });
await trashClient.deleteTrashedDocument({ id });
say("document purged", { trash: (await trashClient.listTrashedDocuments()).totalCount,
  documents: (await documentsClient.listDocuments()).totalCount });
