//! OpenLDAP's `slapd` as a child process (Debian's `slapd`), with a small
//! directory loaded online by `ldapadd` (Debian's `ldap-utils`), so that
//! the `memberof` overlay gives each member its `memberOf` values.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{ChildPeer, Locator, PeerError, ScratchDir, free_port};

/// Where the slapd binary comes from.
pub const LOCATOR: Locator = Locator {
    name: "slapd",
    env_var: "AUTHCHAIN_SLAPD",
    python: None,
    venv_bin: None,
    path_names: &["slapd", "/usr/sbin/slapd"],
    install_hint: "it apt-installs slapd and ldap-utils",
};

/// Where `ldapadd` comes from.
pub const LDAPADD: Locator = Locator {
    name: "ldapadd",
    env_var: "AUTHCHAIN_LDAPADD",
    python: None,
    venv_bin: None,
    path_names: &["ldapadd", "/usr/bin/ldapadd"],
    install_hint: "it apt-installs slapd and ldap-utils",
};

/// How long slapd may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of Gloo's LDAP guide (its `setup-ldap.sh`): suffix
/// `dc=solo,dc=io`, admin `cn=admin,dc=solo,dc=io` / `solopwd`; `marco`
/// (developers), `rick` (developers, managers) and `scottc` (developers,
/// sales) under `ou=people`, passwords `<name>pwd`; groups under
/// `ou=groups`.
pub const GLOO_GUIDE_LDIF: &str = "dn: dc=solo,dc=io
objectClass: dcObject
objectClass: organization
o: solo
dc: solo

dn: ou=people,dc=solo,dc=io
objectClass: organizationalUnit
ou: people
description: All solo.io people

dn: uid=marco,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Marco Schmidt
sn: Schmidt
uid: marco
userPassword: marcopwd
mail: marco.schmidt@solo.io

dn: uid=rick,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Rick Ducott
sn: Ducott
uid: rick
userPassword: rickpwd
mail: rick.ducott@solo.io

dn: uid=scottc,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Scott Cranton
sn: Cranton
uid: scottc
userPassword: scottcpwd
mail: scott.cranton@solo.io

dn: ou=groups,dc=solo,dc=io
objectClass: organizationalUnit
ou: groups
description: Generic parent entry for groups

dn: cn=developers,ou=groups,dc=solo,dc=io
objectClass: groupOfNames
cn: developers
description: Developers group
member: uid=marco,ou=people,dc=solo,dc=io
member: uid=rick,ou=people,dc=solo,dc=io
member: uid=scottc,ou=people,dc=solo,dc=io

dn: cn=sales,ou=groups,dc=solo,dc=io
objectClass: groupOfNames
cn: sales
description: Sales group
member: uid=scottc,ou=people,dc=solo,dc=io

dn: cn=managers,ou=groups,dc=solo,dc=io
objectClass: groupOfNames
cn: managers
description: Managers group
member: uid=rick,ou=people,dc=solo,dc=io
";

/// What a [`Slapd`] serves.
#[derive(Debug, Clone, Default)]
pub struct Directory<'a> {
    /// The database's suffix (`dc=solo,dc=io`); its root entry is in
    /// `ldif`.
    pub suffix: &'a str,
    /// The password of `cn=admin,{suffix}`, the root DN.
    pub admin_password: &'a str,
    /// `access to ...` lines of `slapd.conf`, in order (none: slapd's
    /// default, everyone reads).
    pub access: &'a str,
    /// `allow` features (`bind_anon_dn`: a bind with a DN and no password
    /// succeeds as anonymous, as some directories do).
    pub allow: &'a [&'a str],
    /// The entries, as LDIF, added online in order by `ldapadd` (users
    /// before the groups that name them; `changetype: modify` records
    /// too).
    pub ldif: &'a str,
    /// A server certificate and key (PEM): then slapd also listens for
    /// LDAPS and offers StartTLS.
    pub tls: Option<(&'a str, &'a str)>,
    /// The DN of a `pwdPolicy` entry in `ldif`: then the `ppolicy` overlay
    /// applies it to every user (`pwdMustChange: TRUE` in it: a password
    /// the admin sets must be changed by its user first).
    pub password_policy: Option<&'a str>,
}

/// A running slapd. Dropping it kills the process.
#[derive(Debug)]
pub struct Slapd {
    peer: ChildPeer,
    ldap: SocketAddr,
    ldaps: Option<SocketAddr>,
}

impl Slapd {
    /// Starts slapd with an MDB database for `directory.suffix`, the
    /// `memberof` overlay (groupOfNames `member` gives `memberOf`), the
    /// `ppolicy` one with `directory.password_policy`, and
    /// `directory.ldif` added through it.
    pub async fn start(directory: &Directory<'_>) -> Result<Slapd, PeerError> {
        let binary = LOCATOR.locate()?;
        let ldapadd = LDAPADD.locate()?;
        let dir = ScratchDir::new("slapd")?;
        let base = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("db"))?;
        let mut tls_lines = String::new();
        if let Some((cert, key)) = directory.tls {
            let cert = dir.write("server.crt", cert)?;
            let key = dir.write("server.key", key)?;
            tls_lines = format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                cert.display(),
                key.display()
            );
        }
        let allow = if directory.allow.is_empty() {
            String::new()
        } else {
            format!("allow {}\n", directory.allow.join(" "))
        };
        let (policy_module, policy_overlay) = match directory.password_policy {
            Some(dn) => (
                "moduleload ppolicy\n".to_owned(),
                format!("overlay ppolicy\nppolicy_default \"{dn}\"\n"),
            ),
            None => (String::new(), String::new()),
        };
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             {policy_module}\
             pidfile {base}/slapd.pid\n\
             {allow}{tls_lines}\
             database mdb\n\
             suffix \"{suffix}\"\n\
             rootdn \"cn=admin,{suffix}\"\n\
             rootpw {password}\n\
             directory {base}/db\n\
             maxsize 10485760\n\
             overlay memberof\n\
             memberof-group-oc groupOfNames\n\
             memberof-member-ad member\n\
             memberof-memberof-ad memberOf\n\
             memberof-refint true\n\
             {policy_overlay}\
             {access}\n",
            suffix = directory.suffix,
            password = directory.admin_password,
            access = directory.access,
        );
        let config_path = dir.write("slapd.conf", &config)?;
        let ldif_path = dir.write("entries.ldif", directory.ldif)?;

        let ldap = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let ldaps = match directory.tls {
            Some(_) => Some(SocketAddr::from(([127, 0, 0, 1], free_port()?))),
            None => None,
        };
        let mut urls = format!("ldap://{ldap}/");
        if let Some(ldaps) = ldaps {
            urls.push_str(&format!(" ldaps://{ldaps}/"));
        }
        let mut command = Command::new(binary);
        // `-d 0`: stay in the foreground (killed on drop), log nothing.
        command
            .arg("-f")
            .arg(&config_path)
            .args(["-h", &urls, "-d", "0"]);
        let mut peer = ChildPeer::spawn("slapd", command, dir)?;
        peer.wait_for_port(ldap, STARTUP_TIMEOUT).await?;

        let added = Command::new(ldapadd)
            .args(["-x", "-H", &format!("ldap://{ldap}")])
            .args(["-D", &format!("cn=admin,{}", directory.suffix)])
            .args(["-w", directory.admin_password, "-f"])
            .arg(&ldif_path)
            .output()?;
        if !added.status.success() {
            return Err(peer.failure(format!(
                "ldapadd failed ({}): {}{}",
                added.status,
                String::from_utf8_lossy(&added.stdout),
                String::from_utf8_lossy(&added.stderr)
            )));
        }
        Ok(Slapd { peer, ldap, ldaps })
    }

    /// Its plain LDAP address (StartTLS too, when it has a certificate).
    pub fn addr(&self) -> SocketAddr {
        self.ldap
    }

    /// Its LDAPS address, when it has a certificate.
    pub fn ldaps_addr(&self) -> Option<SocketAddr> {
        self.ldaps
    }

    /// Stops it (a directory that goes down).
    pub fn kill(&mut self) {
        self.peer.kill();
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }
}
