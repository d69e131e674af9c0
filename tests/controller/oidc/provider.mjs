// The lab's OpenID provider in the cluster scenario's single sign-on checks:
// node-oidc-provider with its development sign-in pages, where any login is
// accepted and becomes the account's preferred_username.
// usage: node provider.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI
import Provider from 'oidc-provider';

const [issuer, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], profile: ['preferred_username'] },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, preferred_username: id }),
  }),
});
const { port } = new URL(issuer);
provider.listen(Number(port), () => console.log(`listening on ${issuer}`));
