// Copies the browser files ranklab serves from node_modules into static/vendor
// (git-ignored), so the web app serves only what it needs from /static.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "static", "vendor");
const files = {
  "htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
  "Sortable.min.js": "node_modules/sortablejs/Sortable.min.js",
};
fs.mkdirSync(out, { recursive: true });
for (const [name, src] of Object.entries(files)) {
  fs.copyFileSync(path.join(root, src), path.join(out, name));
}
console.log(`copied ${Object.keys(files).length} vendor files into static/vendor`);
