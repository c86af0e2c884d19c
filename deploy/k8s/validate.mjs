// Validate Kubernetes objects against the Kubernetes OpenAPI schemas, offline, with the npm
// packages kubernetes-models and @kubernetes-models/prometheus-operator (ajv under the hood).
//   npm install --prefix /tmp/k8sval kubernetes-models @kubernetes-models/prometheus-operator
//   python -c '...yaml -> json list...' | node deploy/k8s/validate.mjs /tmp/k8sval/node_modules
// Reads a JSON array of objects on stdin; prints one line per object; exit 1 on any error.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));

function modulePath(apiVersion) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return `${modules}/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js`;
  }
  return `${modules}/kubernetes-models/${apiVersion}/index.js`; // "v1" (core) or "group/version"
}

let failed = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  try {
    const mod = await import(pathToFileURL(modulePath(obj.apiVersion)).href);
    const Model = mod[obj.kind];
    if (!Model) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
    new Model(obj).validate();
    console.log(`ok    ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL  ${name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
